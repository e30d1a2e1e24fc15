"""The input-encoding contract check, :func:`check_encoding`, for plugin authors (also importable
from :mod:`seqpipe.testing` beside ``check_cell``, ``check_topology`` and ``check_task``).

An encoding is served where torch is not installed and rebuilt from an ONNX file's metadata, so
the check holds it to both: its module imports without torch, and the encoding rebuilt from its
JSON spec encodes every value exactly as the fitted one does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

# values a text encoding is fitted on when the caller gives none: repeated words and characters
# (so a min_count keeps some), accents, a symbol outside the Basic Multilingual Plane
EXAMPLE_TEXTS = (
    "the cat sat on the mat",
    "the dog sat on the log",
    "a cat and a dog",
    "héllo wörld",
    "naïve café 🙂",
    "the end",
) * 4


def example_number_series() -> list[np.ndarray]:
    """Ragged [time, 2] float32 series, as the numbers-reading encodings' ``read`` returns them."""
    rng = np.random.default_rng(0)
    return [rng.normal(size=(length, 2)).astype(np.float32) * 3 + 1 for length in (5, 1, 8, 3, 8, 2)]


def check_encoding(
    encoding_cls: type[Any],
    *,
    options: dict[str, Any] | None = None,
    values: Sequence[Any] | None = None,
    torch_free: bool = True,
) -> None:
    """Assert that ``encoding_cls`` follows the input-encoding contract of :class:`seqpipe.inputs.InputEncoding`.

    Declarations: it subclasses ``InputEncoding``; its ``Options`` subclasses ``EncodingOptions``
    and accepts ``options`` (default: none beyond ``kind``); ``reads`` is "text" or "numbers" and
    ``dtype`` "int64" or "float32".

    Fitting and encoding, on ``values`` as ``read`` returns them (default: a few texts, or ragged
    number series for an encoding that reads numbers): after ``fit``, ``size`` is a positive int;
    every ``encode`` gives one step per unit: ids in ``[0, size)`` (int64), or finite float32
    ``[time, size]``; with ``max_length = 2`` no value encodes to more than 2 steps; a
    ``token_aligned`` encoding gives one step per token of a value's ``units``.

    Metadata: ``to_spec()`` is JSON; ``from_spec`` of it read back from JSON encodes every value
    exactly as the fitted encoding does, with the same ``size``, ``reads`` and ``dtype``.

    Serving (``torch_free``): the module defining the class imports in a Python where torch cannot
    be imported, as ``seqpipe predict`` needs.
    """
    from seqpipe.inputs import EncodingOptions, InputEncoding
    from seqpipe.reserved import class_clash

    name = getattr(encoding_cls, "__name__", repr(encoding_cls))
    assert isinstance(encoding_cls, type) and issubclass(encoding_cls, InputEncoding), (
        f"{name} must subclass seqpipe.inputs.InputEncoding"
    )
    assert isinstance(encoding_cls.Options, type) and issubclass(encoding_cls.Options, EncodingOptions), (
        f"{name}.Options must subclass seqpipe.inputs.EncodingOptions"
    )
    clash = class_clash(encoding_cls, InputEncoding)
    assert clash is None, clash
    assert encoding_cls.reads in ("text", "numbers"), (
        f"{name}.reads is {encoding_cls.reads!r}; declare 'text' or 'numbers'"
    )
    assert encoding_cls.dtype in ("int64", "float32"), (
        f"{name}.dtype is {encoding_cls.dtype!r}; declare 'int64' or 'float32'"
    )
    if values is None:
        values = list(EXAMPLE_TEXTS) if encoding_cls.reads == "text" else example_number_series()
    fitted = _fitted(encoding_cls, options or {}, values, name)
    encoded = [_encoded(fitted, v, name) for v in values]
    _check_steps(fitted, values, encoded, name)
    _check_cut(encoding_cls, options or {}, values, name)
    _check_spec_round_trip(encoding_cls, fitted, values, encoded, name)
    if torch_free:
        _check_imports_without_torch(encoding_cls, name)


def _fitted(encoding_cls: type[Any], options: dict[str, Any], values: Sequence[Any], name: str) -> Any:
    from pydantic import ValidationError

    kind = encoding_cls.Options.model_fields["kind"].default
    try:
        validated = encoding_cls.Options.model_validate({"kind": kind or name.lower(), **options})
    except ValidationError as exc:
        raise AssertionError(f"{name}.Options: {options!r} does not validate: {exc}") from exc
    encoding = encoding_cls(validated)
    encoding.fit(list(values))
    size = encoding.size
    assert isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size >= 1, (
        f"{name}.size after fit is {size!r}; declare the vocabulary size (ids) or features per step, a positive int"
    )
    return encoding


def _encoded(encoding: Any, value: Any, name: str) -> np.ndarray:
    out = np.asarray(encoding.encode(value))
    where = f"{name}.encode({_shown(value)})"
    if encoding.dtype == "int64":
        assert out.dtype.kind in "iu", f"{where} gave {out.dtype} values; an int64 encoding gives token ids"
        if encoding.word_characters() is None:
            assert out.ndim == 1, f"{where} has shape {out.shape}; give one id per step"
        assert out.size == 0 or (out.min() >= 0 and out.max() < encoding.size), (
            f"{where} gave ids from {out.min()} to {out.max()}; ids must lie in [0, size = {encoding.size})"
        )
    else:
        assert out.dtype == np.float32, f"{where} gave {out.dtype}; a float32 encoding gives float32 features"
        assert out.ndim == 2 and out.shape[1] == encoding.size, (
            f"{where} has shape {out.shape}; give [time, size = {encoding.size}]"
        )
        assert np.isfinite(out).all(), f"{where} holds a nan or an infinity"
    return out


def _check_steps(encoding: Any, values: Sequence[Any], encoded: list[np.ndarray], name: str) -> None:
    for value, out in zip(values, encoded):
        steps = encoding.steps(value)
        expected = steps if encoding.max_length is None else min(steps, encoding.max_length)
        assert len(out) == expected, (
            f"{name}.encode({_shown(value)}) gave {len(out)} steps where steps() says {steps}"
            + (f" (max_length {encoding.max_length})" if encoding.max_length is not None else "")
        )
        if encoding.token_aligned and encoding.reads == "text":
            units = encoding.units(value)
            assert isinstance(units, list), f"{name}.units({_shown(value)}) must return a list"
            tokens = [str(u) for u in units]
            got = len(np.asarray(encoding.encode(tokens)))
            limit = encoding.max_length
            assert got == (len(tokens) if limit is None else min(len(tokens), limit)), (
                f"{name} is token_aligned but encodes the {len(tokens)} tokens of {_shown(value)} into {got} steps; "
                "a tagger's labels would drift: set token_aligned = False"
            )


def _check_cut(encoding_cls: type[Any], options: dict[str, Any], values: Sequence[Any], name: str) -> None:
    cut = _fitted(encoding_cls, {**options, "max_length": 2}, values, name)
    for value in values:
        got = len(np.asarray(cut.encode(value)))
        assert got <= 2, (
            f"{name}.encode({_shown(value)}) with max_length = 2 gave {got} steps; keep the first max_length"
        )


def _check_spec_round_trip(
    encoding_cls: type[Any], fitted: Any, values: Sequence[Any], encoded: list[np.ndarray], name: str
) -> None:
    spec = fitted.to_spec()
    assert isinstance(spec, dict), f"{name}.to_spec() must return a dict"
    try:
        text = json.dumps(spec)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{name}.to_spec() is not JSON ({exc}); store lists, numbers and strings only") from exc
    rebuilt = encoding_cls.from_spec(json.loads(text))
    assert isinstance(rebuilt, encoding_cls), f"{name}.from_spec must return a {name}"
    for attribute in ("size", "reads", "dtype"):
        assert getattr(rebuilt, attribute) == getattr(fitted, attribute), (
            f"{name}.from_spec(to_spec()) has {attribute} {getattr(rebuilt, attribute)!r}, the fitted one "
            f"{getattr(fitted, attribute)!r}: store what it needs in to_spec()"
        )
    for value, expected in zip(values, encoded):
        got = np.asarray(rebuilt.encode(value))
        assert got.shape == expected.shape and np.array_equal(got, expected), (
            f"{name}.from_spec(to_spec()) encodes {_shown(value)} differently from the fitted encoding; serving "
            "would read inputs otherwise than training did: store everything fit learned in to_spec()"
        )


def _check_imports_without_torch(encoding_cls: type[Any], name: str) -> None:
    module = encoding_cls.__module__
    code = (
        "import sys\nclass Blocked:\n    def find_spec(self, fullname, path=None, target=None):\n"
        "        if fullname == 'torch' or fullname.startswith('torch.'):\n"
        "            raise ImportError('torch is blocked')\n"
        f"sys.meta_path.insert(0, Blocked())\nimport {module}\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    last = (done.stderr.strip().splitlines() or [""])[-1]
    assert done.returncode == 0, (
        f"{name}: its module {module} does not import without torch ({last}); serving "
        "rebuilds the encoding where torch is not installed: keep torch imports out of it"
    )


def _shown(value: Any) -> str:
    return repr(value)[:40] if not isinstance(value, np.ndarray) else f"array{value.shape}"
