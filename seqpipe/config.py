"""The pipeline file: TOML parsed, validated with pydantic, errors rendered as one line each.

Core sections are validated before any plugin loads; plugin options (``[model.cell_options]``,
``[model.topology_options]``, ``[task.options]``) are validated against the ``Options`` model each
plugin declares, through the same error formatter, by :func:`resolve_plugin_options`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from seqpipe.errors import ConfigError, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(Section):
    dataset: str | None = Field(None, description="a bundled dataset by name (see `seqpipe plugins`)")
    path: str | None = Field(
        None, description="your own data file, relative to the pipeline file; split by the fractions below"
    )
    train: str | None = Field(
        None, description="instead of 'path': your training file, with the published splits beside it"
    )
    validation: str | None = Field(
        None, description="with 'train': the validation file (default: cut from train by validation_fraction)"
    )
    test: str | None = Field(None, description="with 'train': the test file (default: cut from train by test_fraction)")
    format: Literal["csv", "tsv", "jsonl", "conll"] | None = Field(None, description="default: from the file extension")
    comment_prefix: str | None = Field(
        None,
        min_length=1,
        description="conll: skip (and count) lines starting with this; "
        "default: every line but '-DOCSTART-' is data, so '#hashtag' tokens are kept",
    )
    sequence_column: str | None = Field(
        None,
        description="long format (CSV/TSV, one row per step): the column naming "
        "each row's sequence; rows of one sequence are joined in order_column order",
    )
    order_column: str | None = Field(
        None, description="with sequence_column: the column giving each row's step (a number)"
    )
    strip_labels: bool = Field(
        False,
        description="strip spaces around labels and tags (counted in the run log); default: "
        "a label with spaces around it (' ham', 'B-PER ') is refused, as a likely typo",
    )
    validation_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0.0, lt=0.5)
    split_seed: int = Field(0, description="seeds the shuffle before splitting")

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if sum(source is not None for source in (self.dataset, self.path, self.train)) != 1:
            raise ValueError(
                "set exactly one of 'dataset' (bundled), 'path' (your own file) or 'train' (your own files, "
                "split as published)"
            )
        if self.train is None and (self.validation is not None or self.test is not None):
            raise ValueError("'validation' and 'test' files go with 'train' (rename 'path' to 'train')")
        if (self.sequence_column is None) != (self.order_column is None):
            raise ValueError("long format needs both 'sequence_column' and 'order_column'")
        return self


class ModelConfig(Section):
    cell: str = "gru"
    topology: str = "single"
    hidden_size: int = Field(128, ge=1)
    initial_state: Literal["zeros", "random", "learnable", "conditioned"] = Field(
        "zeros", description="'conditioned': computed from the task's condition by a small network (generate)"
    )
    initial_state_scale: float = Field(0.1, gt=0.0, description="standard deviation of the 'random' rule's noise")
    cell_options: dict[str, Any] = Field(default_factory=dict)
    topology_options: dict[str, Any] = Field(default_factory=dict)


class TaskConfig(Section):
    name: str = "classify"
    options: dict[str, Any] = Field(default_factory=dict)


class TrainingConfig(Section):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(3e-3, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    grad_clip: float = Field(1.0, gt=0.0, description="max global gradient norm")
    patience: int = Field(4, ge=1, description="epochs without validation improvement before stopping")
    lr_decay: float = Field(
        1.0, gt=0.0, le=1.0, description="multiply the learning rate by this after each epoch without improvement"
    )
    ema_decay: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="validate, keep and export an exponential moving "
        "average of the weights (updated every batch) instead of the last weights; e.g. 0.99",
    )
    seed: int = 0
    max_minutes: float | None = Field(
        None,
        gt=0.0,
        description="stop training after the epoch that passes this budget, "
        "then evaluate and export the best epoch as usual",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="where training steps run: auto is CUDA when torch "
        "sees a GPU, else the CPU; exports are always made from a CPU fp32 copy",
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="training arithmetic: bf16 autocasts the forward "
        "pass and loss (weights, validation and exports stay fp32); fp16 "
        "(with a gradient scaler) needs a CUDA device",
    )
    monitor: str | None = Field(
        None,
        description="the validation metric that picks the best epoch and stops early "
        "(any the task reports, e.g. 'entity_f1'); default: the task's own",
    )
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default: torch's choice")
    bucket: bool = Field(
        False,
        description="batch training examples of similar length together (sorted within random "
        "chunks of 50 batches, batch order still random): less padding, faster epochs; the run log "
        "reports the padding share either way",
    )


# reduced-precision copies an export can add, each with its own `<name>` and `<name>_tolerance` keys
PRECISIONS = ("int8", "fp16")


class ExportConfig(Section):
    graphs: list[Literal["step", "sequence"]] | None = Field(
        None, description="default: every graph the model has (step when causal, sequence for built-in cells)"
    )
    opset: int = Field(18, ge=17, le=23)
    exporter: Literal["dynamo", "torchscript"] = Field(
        "dynamo", description="torch.onnx's exporter for graphs traced from torch"
    )
    native_step: bool = Field(
        True,
        description="when the cells declare a native ONNX RNN/GRU/LSTM operator and the topology "
        "its layers: the step graph from those operators run for one step (the sequence graph's "
        "operators, written without tracing); false: trace model.step with torch.onnx",
    )
    parity_tolerance: float = Field(1e-5, gt=0.0)
    parity_sequences: int = Field(512, ge=1, description="test sequences stepped through both runtimes")
    parity_tolerance_reason: str | None = Field(
        None,
        description="why this pipeline needs a tolerance other than 1e-5; recorded in parity.json and each file's "
        "metadata",
    )
    int8: bool = Field(False, description="also write <graph>.int8.onnx (dynamic quantization) for CPU serving")
    int8_tolerance: float = Field(
        0.15,
        gt=0.0,
        description="max |int8 - fp32| on y after each whole test sequence (scaled beyond 1); "
        "the states' drift is recorded, not judged",
    )
    fp16: bool = Field(
        False,
        description="also write <graph>.fp16.onnx (float16 weights and arithmetic, float32 inputs/outputs) for GPU "
        "serving",
    )
    fp16_tolerance: float = Field(
        0.03,
        gt=0.0,
        description="max |fp16 - fp32| on y after each whole test sequence (scaled beyond 1); "
        "the states' drift is recorded, not judged",
    )


class Range(Section):
    """A numeric search range: integers when ``low`` and ``high`` are integers (and ``step`` too), else floats."""

    low: float
    high: float
    log: bool = Field(False, description="sample on a log scale (learning rates, weight decay)")
    step: float | None = Field(None, gt=0, description="only values low + k × step")

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("choose log or step, not both")
        return self


class TuneConfig(Section):
    """``seqpipe tune``'s study (``seqpipe run`` ignores this table)."""

    trials: int = Field(20, ge=1, description="trials the study finishes (complete or pruned); --trials overrides")
    metric: str | None = Field(None, description="the validation metric to optimise; default: the run's monitor")
    seed: int = Field(0, description="seeds the sampler (Optuna's TPE)")
    prune: bool = Field(
        True,
        description="stop a trial after an epoch whose validation score is behind the median of "
        "earlier trials' at that epoch (Optuna's median pruner, from the 6th trial, and from epoch training.patience "
        "(at least 2), when early stopping would first judge it too)",
    )
    space: dict[str, list[Any] | Range] = Field(
        description="what to search: keys are dotted pipeline keys "
        '("model.hidden_size", "task.options.dropout"), values a list of '
        "choices or a range table {low, high, log, step}"
    )

    @field_validator("space", mode="before")
    @classmethod
    def _ranges(cls, space: Any) -> Any:
        """Each value a list of choices or a range table, with one message for what is wrong."""
        if not isinstance(space, dict):
            return space
        out: dict[str, Any] = {}
        for key, value in space.items():
            if isinstance(value, list):
                out[key] = value
            elif isinstance(value, dict):
                try:
                    out[key] = Range.model_validate(value)
                except ValidationError as exc:
                    problem = "; ".join(
                        f"{'.'.join(map(str, e['loc'])) or 'range'}: {e['msg'].removeprefix('Value error, ')}"
                        for e in exc.errors()
                    )
                    raise ValueError(f"space key {key!r}: {problem}") from None
            else:
                raise ValueError(
                    f"space key {key!r}: expected a list of choices or a range table {{low, high}}, found {value!r}"
                )
        return out

    @model_validator(mode="after")
    def _keys(self) -> TuneConfig:
        for key, value in self.space.items():
            parts = key.split(".")
            if (
                len(parts) < 2
                or parts[0] not in ("data", "input", "output", "model", "task", "training", "export")
                or not all(parts)
            ):
                raise ValueError(
                    f'space key {key!r} is not a dotted pipeline key such as "model.hidden_size" or '
                    '"training.learning_rate"'
                )
            if isinstance(value, list) and not value:
                raise ValueError(f"space key {key!r} lists no choices")
        return self


class PipelineConfig(Section):
    data: DataConfig
    # how the input column becomes a sequence, and (seq2seq) the target's tokens: {kind = "...", the
    # encoding's own options}, validated against the encoding's Options once plugins are loaded
    input: dict[str, Any] | None = Field(
        None,
        description="the input encoding: kind (characters, words, subwords, numbers, "
        "or a plugin's) and its options; default: the task's",
    )
    output: dict[str, Any] | None = Field(
        None, description="the output encoding of a task that writes tokens (seq2seq)"
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    tune: TuneConfig | None = Field(None, description="the search space of `seqpipe tune` (ignored by `seqpipe run`)")


def _found(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _expected(err: Any) -> str:
    ctx = err.get("ctx") or {}
    kind = err["type"]
    bounds = {
        "greater_than": "> {gt}",
        "greater_than_equal": ">= {ge}",
        "less_than": "< {lt}",
        "less_than_equal": "<= {le}",
    }
    if kind in bounds:
        return "a number " + bounds[kind].format(**ctx)
    if kind.startswith("int_"):
        return "an integer"
    if kind.startswith("float_"):
        return "a number"
    if kind.startswith("bool_"):
        return "true or false"
    if kind.startswith("string_") or kind == "str_type":
        return "a string"
    if kind in {"dict_type", "model_type", "model_attributes_type"}:
        return "a table"
    if kind == "list_type":
        return "a list"
    if kind == "literal_error":
        return "one of " + ctx.get("expected", "")
    return err["msg"][0].lower() + err["msg"][1:]


def format_validation_error(
    exc: ValidationError, source: str, prefix: tuple[str | int, ...] = (), model: type[BaseModel] | None = None
) -> str:
    """Render pydantic errors as lines ``FILE: KEY.PATH: expected …, found …``."""
    lines = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        key = ".".join(str(part) for part in loc) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            siblings = _field_names(model, err["loc"][:-1]) if model else []
            lines.append(
                f"{source}: {key}: unknown key{did_you_mean(str(loc[-1]), siblings)}; allowed: "
                f"{', '.join(siblings) or 'none'}."
            )
        elif kind == "missing":
            lines.append(f"{source}: {key}: missing; add this required key.")
        elif kind == "value_error":
            lines.append(f"{source}: {key}: {err['msg'].removeprefix('Value error, ')}.")
        elif kind == "literal_error":
            expected = (err.get("ctx") or {}).get("expected", "")
            options = [o.strip().strip("'") for o in expected.replace(" or ", ", ").split(",")]
            hint = did_you_mean(str(err["input"]), options) if isinstance(err["input"], str) else ""
            lines.append(f"{source}: {key}: expected one of {expected}, found {_found(err['input'])}{hint}.")
        else:
            lines.append(f"{source}: {key}: expected {_expected(err)}, found {_found(err['input'])}.")
    return "\n".join(lines)


def _field_names(model: type[BaseModel], loc: tuple) -> list[str]:
    """The allowed keys of the table at ``loc`` inside ``model``, for "did you mean"."""
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def parse_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such pipeline file; check the path (ready-made ones are in pipelines/)."
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the pipeline file: {exc.strerror}.") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the pipeline file as UTF-8.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}; fix the syntax there.") from None


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Parse and validate the core sections of a pipeline file (plugins not yet involved)."""
    path = Path(path)
    data = parse_toml(path)
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path), model=PipelineConfig)) from None
    refuse_coercions(config, data, str(path))
    return config


def refuse_coercions(model: BaseModel, values: dict[str, Any], source: str, prefix: tuple[str, ...] = ()) -> None:
    """Refuse what pydantic's lax mode would quietly convert: text or true/false where a number is
    read (``hidden_size = "12"``, ``characters = true`` would become 12 and 1), a number where true or
    false is read. Checked on the validated ``model`` against the ``values`` as written, nested tables too."""
    import json

    for key, given in values.items():
        if not isinstance(key, str) or key not in type(model).model_fields:
            continue
        got, where = getattr(model, key), ".".join((*prefix, key))
        if isinstance(given, dict) and isinstance(got, BaseModel):
            refuse_coercions(got, given, source, (*prefix, key))
        elif isinstance(given, (bool, str)) and isinstance(got, (int, float)) and not isinstance(got, bool):
            raise ConfigError(
                f"{source}: {where}: expected {'an integer' if isinstance(got, int) else 'a number'}, found "
                f"{json.dumps(given)}; write the number itself (no quotes, not true/false)."
            )
        elif isinstance(got, bool) and not isinstance(given, bool):
            raise ConfigError(f"{source}: {where}: expected true or false, found {json.dumps(given)}.")


def validate_options(
    options_model: type[BaseModel], values: dict[str, Any], source: str, key: str, sizes: dict[str, int] | None = None
) -> BaseModel:
    """Validate a plugin's options table with the same one-line errors as the core sections.

    ``sizes`` (e.g. ``{"hidden_size": 64}``) reach the plugin's validators as ``info.context``, so
    an option that must fit the model's sizes is refused at ``seqpipe check``, not at ``run``."""
    try:
        options = options_model.model_validate(values, context=dict(sizes or {}))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, tuple(key.split(".")), model=options_model)) from None
    refuse_coercions(options, values, source, tuple(key.split(".")))
    return options


def format_pipeline(tables: dict[str, dict[str, Any]]) -> str:
    """A pipeline file from nested dicts of strings, numbers, booleans and lists, as
    :func:`parse_toml` reads it back (inline tables one level down; ``task.options`` as its own table)."""
    import json
    import re

    def key(k: str) -> str:  # bare keys where TOML allows them, quoted ("model.hidden_size") otherwise
        return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)

    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + " }"
        return json.dumps(v)  # TOML's basic strings, numbers, true/false and arrays read as JSON writes them

    lines = []
    for name, table in tables.items():
        options = table.get("options") if name == "task" else None
        lines.append(f"[{name}]")
        lines += [f"{key(k)} = {value(v)}" for k, v in table.items() if not (name == "task" and k == "options")]
        if options:
            lines.append("[task.options]")
            lines += [f"{key(k)} = {value(v)}" for k, v in options.items()]
    return "\n".join(lines) + "\n"
