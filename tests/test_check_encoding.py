"""check_encoding: the built-in encodings pass it, and each way an encoding plugin can break the
contract fails it with a message naming the class and what broke."""

from __future__ import annotations

import re
import sys
from typing import Any, Literal

import numpy as np
import pytest

from seqpipe.builtin.encodings import BUILTIN_ENCODINGS
from seqpipe.inputs import EncodingOptions, InputEncoding
from seqpipe.testing import check_encoding


@pytest.mark.parametrize("kind", sorted(BUILTIN_ENCODINGS))
def test_every_builtin_encoding_honours_the_contract(kind):
    check_encoding(BUILTIN_ENCODINGS[kind], torch_free=kind == "characters")  # one subprocess is enough here


def test_options_and_values_are_the_callers():
    from seqpipe.builtin.encodings import Characters, Numbers

    check_encoding(
        Characters, options={"lowercase": True, "min_count": 1}, values=["Abc", "abC d", "xyz"], torch_free=False
    )
    series = [np.arange(6, dtype=np.float32).reshape(3, 2) + i for i in range(4)]
    check_encoding(Numbers, options={"normalize": "series"}, values=series, torch_free=False)


class BytesOptions(EncodingOptions):
    kind: Literal["bytes"] = "bytes"


class Bytes(InputEncoding):
    """A correct encoding (one id per UTF-8 byte); the broken ones below each change one thing."""

    Options = BytesOptions
    token_aligned = False  # a character may take several bytes

    def fit(self, values):
        pass

    def encode(self, value: Any):
        return list(str(value).encode("utf-8"))[: self.max_length]

    def steps(self, value: Any) -> int:
        return len(str(value).encode("utf-8"))

    @property
    def size(self) -> int:
        return 256

    def to_spec(self):
        return {"kind": "bytes", "dtype": "int64", "max_length": self.max_length}

    @classmethod
    def from_spec(cls, spec):
        return cls(BytesOptions(max_length=spec["max_length"]))


def test_a_correct_plugin_encoding_passes():
    check_encoding(Bytes, torch_free=False)


class IdsPastTheVocabulary(Bytes):
    @property
    def size(self) -> int:
        return 128  # but UTF-8 bytes of "é" are above it


class IgnoresMaxLength(Bytes):
    def encode(self, value):
        return list(str(value).encode("utf-8"))


class ClaimsTokenAlignment(Bytes):
    token_aligned = True  # "héllo" as tokens is one token, but more than one byte


class LosesItsFitInTheSpec(Bytes):
    def fit(self, values):
        self.offset = 1

    def encode(self, value):
        return [min(255, b + getattr(self, "offset", 0)) for b in str(value).encode("utf-8")][: self.max_length]


class SpecIsNotJson(Bytes):
    def to_spec(self):
        return {"kind": "bytes", "table": np.arange(3)}


class NotAnEncoding:
    pass


@pytest.mark.parametrize(
    "broken, message",
    [
        (
            IdsPastTheVocabulary,
            r"IdsPastTheVocabulary\.encode\(.*\) gave ids from \d+ to \d+; ids must lie in \[0, size = 128\)",
        ),
        (IgnoresMaxLength, r"IgnoresMaxLength\.encode\(.*\) with max_length = 2 gave \d+ steps"),
        (
            ClaimsTokenAlignment,
            r"ClaimsTokenAlignment is token_aligned but encodes the \d+ tokens .* set token_aligned = False",
        ),
        (
            LosesItsFitInTheSpec,
            r"LosesItsFitInTheSpec\.from_spec\(to_spec\(\)\) encodes .* differently .* store everything fit",
        ),
        (SpecIsNotJson, r"SpecIsNotJson\.to_spec\(\) is not JSON"),
        (NotAnEncoding, r"NotAnEncoding must subclass seqpipe\.inputs\.InputEncoding"),
    ],
)
def test_each_broken_encoding_fails_naming_what_broke(broken, message):
    with pytest.raises(AssertionError, match=message):
        check_encoding(broken, torch_free=False)


PLUGIN_MODULE = """
{torch}
from typing import Literal
from seqpipe.inputs import EncodingOptions, InputEncoding

class BytesOptions(EncodingOptions):
    kind: Literal["bytes"] = "bytes"

class PluginBytes(InputEncoding):
    Options = BytesOptions

    def fit(self, values):
        pass

    def encode(self, value):
        return list(str(value).encode("utf-8"))[: self.max_length]

    def steps(self, value):
        return len(str(value).encode("utf-8"))

    @property
    def size(self):
        return 256

    def to_spec(self):
        return {{"kind": "bytes", "dtype": "int64", "max_length": self.max_length}}

    @classmethod
    def from_spec(cls, spec):
        return cls(BytesOptions(max_length=spec["max_length"]))
"""


@pytest.mark.parametrize("imports_torch", [True, False])
def test_an_encoding_module_that_imports_torch_fails_the_serving_check(tmp_path, monkeypatch, imports_torch):
    name = f"plugin_bytes_{imports_torch}"
    (tmp_path / f"{name}.py").write_text(PLUGIN_MODULE.format(torch="import torch" if imports_torch else ""))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # where the check's own Python finds the module
    try:
        module = __import__(name)
        if imports_torch:
            with pytest.raises(
                AssertionError, match=re.escape(f"PluginBytes: its module {name} does not import without torch")
            ):
                check_encoding(module.PluginBytes)
        else:
            check_encoding(module.PluginBytes)
    finally:
        sys.modules.pop(name, None)
