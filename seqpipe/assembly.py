"""Turn a validated pipeline file and a registry into concrete plugin classes and options.

Everything a run needs is resolved here, before any data is read or model built, so a wrong name
or option fails in ``seqpipe check`` exactly as it would in ``seqpipe run``.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from seqpipe.config import PRECISIONS, DataConfig, PipelineConfig, load_pipeline, validate_options
from seqpipe.data import DataSource, infer_format
from seqpipe.errors import ConfigError, DataError, PluginError, SeqpipeError, did_you_mean
from seqpipe.registry import Entry, Registry, plugin_label
from seqpipe.reserved import instance_clash


def _first_line(exc: BaseException) -> str:
    """An error's message up to its first line break: the line a user sees stays one line."""
    said = str(exc).strip().splitlines()
    return said[0] if said else ""


@dataclass
class ResolvedPipeline:
    path: Path
    config: PipelineConfig
    cell: Entry
    topology: Entry
    task: Entry
    cell_options: BaseModel
    topology_options: BaseModel
    task_options: BaseModel
    data: DataSource
    graphs: list[str]
    budget_note: str | None = None  # the batch size, epochs and patience fitted to a small training split
    monitor_note: str | None = (
        None  # why the best epoch is picked by loss, not the task's metric (a tiny validation split)
    )
    task_notes: list[str] = field(default_factory=list)  # what the task chose from the data (Task.notes)

    def make_task(self) -> Any:
        return self.task.obj(self.task_options, self.data)

    def prepare(self) -> tuple[Any, dict[str, int], tuple[str, str]]:
        """The task with its data read (every record, as `run` reads it), the examples per split, and
        the monitored metric with its direction: what `check` and `run` both do before training."""
        with self.plugin_code("reading the data"):
            task = self.make_task()
            sizes = task.prepare()
        empty = [split for split, n in sizes.items() if n == 0]
        if empty:
            raise DataError(
                f"{self.data.path}: {sum(sizes.values())} examples leave no {' or '.join(empty)} examples; "
                "add data, raise the split fractions, or give the split's own file (data.validation, data.test)."
            )
        self.fit_budget(sizes)
        monitor = self.monitor(task, sizes)
        with self.plugin_code("describing its choices"):
            self.task_notes = list(task.notes())
        return task, sizes, monitor

    @property
    def notes(self) -> list[str]:
        """One line each for what was chosen from the data rather than written in the pipeline file
        (the training budget, the monitor, the task's own choices), for `check` and `run` to print."""
        return [note for note in (self.budget_note, self.monitor_note, *self.task_notes) if note]

    def fit_budget(self, sizes: dict[str, int]) -> None:
        """Fit the training budget the pipeline left unset to the training split's size
        (:mod:`seqpipe.budget`); :attr:`budget_note` says what was chosen, for `check` and `run`."""
        from seqpipe.budget import fitted_budget

        training, self.budget_note = fitted_budget(self.config.training, sizes.get("train", 0))
        self.config = self.config.model_copy(update={"training": training})

    def monitor(self, task: Any, sizes: dict[str, int] | None = None) -> tuple[str, str]:
        """The validation metric that picks the best epoch, and its direction, once ``task`` has read
        its data: ``[training] monitor``, or the task's own, or the validation loss when the task's
        own would be judged on too few validation examples (:func:`seqpipe.selection.too_small`;
        :attr:`monitor_note` then says so, for `check` and `run` to print)."""
        from seqpipe.selection import too_small

        names = task.metric_names()
        name = self.config.training.monitor or task.monitor
        if name not in names:
            raise ConfigError(
                f"{self.path}: training.monitor: task '{self.config.task.name}' reports no '{name}' on this data "
                f"(it reports {', '.join(sorted(names))}); choose one of those."
            )
        self.monitor_note = None
        why = too_small(task, sizes) if self.config.training.monitor is None and name != "loss" and sizes else None
        if why is not None:
            self.monitor_note = (
                f"validation: {why}, too few to pick the best epoch by {name} (it moves in coarse steps "
                "on so few): the epoch with the lowest validation loss is kept. Set training.monitor to "
                "choose otherwise, or give a larger validation split (data.validation_fraction or "
                "data.validation)."
            )
            return "loss", "min"
        return name, names[name]

    def build_model(self, task: Any) -> Any:
        """The task's model, built, and one training batch put through it and the task's loss, with
        no step taken and torch's random state left as it was (so training is unchanged): plugin code
        that cannot build the model or compute a loss fails here, at `check` and before `run` makes
        a run directory, in one line naming the cell, topology or task whose code raised."""
        import torch

        m = self.config.model
        with self.plugin_code("building the model"):
            model = task.build_model(self.make_topology, m.initial_state, m.initial_state_scale)
        with self.plugin_code("computing the loss of a first training batch"), torch.random.fork_rng(devices=[]):
            batch = next(iter(task.batches("train", self.config.training.batch_size)), None)
            if batch is not None:
                model.eval()  # no dropout drawn, no running statistics moved
                try:
                    with torch.no_grad():
                        loss = task.loss(model, batch)
                finally:
                    model.train()
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                    got = (
                        type(loss).__name__
                        if not isinstance(loss, torch.Tensor)
                        else f"a tensor of shape {tuple(loss.shape)}"
                    )
                    raise PluginError(
                        f"{self.path}: task '{self.task.name}' from plugin "
                        f"{plugin_label(self.task.plugin, self.task.distribution)}: loss() returned {got}, "
                        "not a scalar tensor; return the batch's mean loss."
                    )
        return model

    def make_topology(self, input_size: int) -> Any:
        topology = self.topology.obj(
            self.cell.obj,
            input_size,
            self.config.model.hidden_size,
            self.cell_options.model_dump(),
            **self.topology_options.model_dump(),
        )
        self._refuse_name_clashes(topology)
        return topology

    def _refuse_name_clashes(self, topology: Any) -> None:
        """A topology or cell that stores a submodule under a contract member's name is refused: the
        contract's member would silently win over it (see :mod:`seqpipe.reserved`)."""
        from seqpipe.contracts import Cell, Topology

        built = [(self.topology, topology, Topology)] + [
            (self.cell, m, Cell) for m in topology.modules() if isinstance(m, Cell)
        ]
        for entry, module, contract in built:
            clash = instance_clash(module, contract)
            if clash is not None:
                raise PluginError(
                    f"{self.path}: {entry.kind} '{entry.name}' from plugin "
                    f"{plugin_label(entry.plugin, entry.distribution)}: {clash}."
                )

    @contextlib.contextmanager
    def plugin_code(self, doing: str, *, training: bool = False) -> Iterator[None]:
        """Run plugin code (a task's data reading, a model's construction; with ``training``, the
        epochs, evaluation and export the engine drives through it): a failure inside it is one line
        naming the cell, topology or task whose code raised, its plugin and distribution (the
        traceback behind ``seqpipe --debug``). With ``training``, an error whose traceback passes
        through no plugin's code is the engine's own and is raised as it is, and so are the machine's
        faults (disk full: one line of their own) and a stop signal."""
        from seqpipe.runstate import Terminated

        try:
            yield
        except (SeqpipeError, Terminated):
            raise
        except Exception as exc:
            if training and isinstance(exc, OSError):
                raise
            entry = self._culprit(exc, default=None if training else self.task)
            if entry is None:
                raise
            advice = (
                _contract_hint(exc, entry)
                or "check its options in the pipeline file, or report it to the plugin's authors"
            )
            raise PluginError(
                f"{self.path}: {entry.kind} '{entry.name}' from plugin "
                f"{plugin_label(entry.plugin, entry.distribution)} "
                f"failed while {doing}: {type(exc).__name__}: {_first_line(exc)}; {advice}."
            ) from exc

    def _culprit(self, exc: BaseException, default: Entry | None) -> Entry | None:
        """The entry whose module holds the innermost frame of ``exc``'s traceback (``default`` when none does)."""
        entries = (self.task, self.topology, self.cell)
        missing = _missing_attribute_owner(exc)
        for entry in (
            entries if missing is not None else ()
        ):  # the object lacking it is the culprit, wherever it was read
            if missing in {cls.__name__ for cls in entry.obj.__mro__}:
                return entry
        by_module = {entry.obj.__module__: entry for entry in entries}
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            for module, entry in by_module.items():
                if frame.filename.endswith(module.replace(".", "/") + ".py"):
                    return entry
        return default

    def as_dict(self) -> dict[str, Any]:
        """The resolved config with every default filled in, as written to the run directory."""
        resolved = self.config.model_dump(mode="json")
        resolved["model"]["cell_options"] = self.cell_options.model_dump(mode="json")
        resolved["model"]["topology_options"] = self.topology_options.model_dump(mode="json")
        resolved["task"]["options"] = self.task_options.model_dump(mode="json")
        for key in ("input", "output"):
            encoding = getattr(self.data, key)
            resolved[key] = encoding.options.model_dump(mode="json") if encoding is not None else None
        resolved["data"]["resolved_path"] = str(self.data.path)
        resolved["data"]["relative_to"] = str(self.path.resolve().parent)  # where a resumed run finds the data
        resolved["data"]["format"] = self.data.format
        resolved["export"]["graphs"] = self.graphs
        resolved["plugins"] = {
            kind: {"plugin": entry.plugin, "distribution": entry.distribution or "seqpipe"}
            for kind, entry in (("cell", self.cell), ("topology", self.topology), ("task", self.task))
        }
        return resolved


def resolve_pipeline(path: str | Path, registry: Registry, data_relative_to: Path | None = None) -> ResolvedPipeline:
    """``data_relative_to``: the folder the data paths are relative to, when not the pipeline
    file's own (a run directory's copy of a pipeline, resumed)."""
    path = Path(path)
    config = load_pipeline(path)
    src = str(path)
    cell = registry.get("cell", config.model.cell, f"{src}: model.cell")
    topology = registry.get("topology", config.model.topology, f"{src}: model.topology")
    task = registry.get("task", config.task.name, f"{src}: task.name")
    sizes = {"hidden_size": config.model.hidden_size}  # option validators may check options against the model's sizes
    cell_options = validate_options(cell.obj.Options, config.model.cell_options, src, "model.cell_options", sizes)
    topology_options = validate_options(
        topology.obj.Options, config.model.topology_options, src, "model.topology_options", sizes
    )
    task_options = validate_options(task.obj.Options, config.task.options, src, "task.options", sizes)
    _check_task_fit(config, task, cell, topology, src)
    graphs = _graphs(config, cell, topology, task, src, task.obj.no_step_graph(task_options))
    data = _data_source(config.data, path, registry, data_relative_to or path.parent)
    data = replace(
        data,
        input=_encoding(config.input, "input", task, registry, src),
        output=_encoding(config.output, "output", task, registry, src),
    )
    return ResolvedPipeline(
        path, config, cell, topology, task, cell_options, topology_options, task_options, data, graphs
    )


def _encoding(table: dict[str, Any] | None, key: str, task: Entry, registry: Registry, src: str) -> Any:
    """The pipeline's ``[input]`` or ``[output]`` encoding, unfitted, its options validated; the
    task's default when the table is absent; None for a task that reads no such table."""
    default = task.obj.default_input if key == "input" else task.obj.default_output
    if default is None:
        if table is not None:
            raise ConfigError(
                f"{src}: {key}: task '{task.name}' takes no [{key}] table"
                + (" (it reads its own columns: see its options)" if key == "input" else "")
                + f"; remove [{key}]."
            )
        return None
    table = dict(table or {})
    kind = table.setdefault("kind", default)
    if not isinstance(kind, str):
        raise ConfigError(f"{src}: {key}.kind: expected an encoding name, found {kind!r}; see `seqpipe plugins`.")
    entry = registry.get("encoding", kind, f"{src}: {key}.kind")
    for option in [k for k in table if k not in entry.obj.Options.model_fields]:  # another kind's option: say whose
        # among the other kinds this table could name (an [output] writes tokens; a clashing name is not offered)
        takers = [
            name
            for name, e in registry.entries["encoding"].items()
            if name != kind
            and ("encoding", name) not in registry.clashes
            and option in e.obj.Options.model_fields
            and (e.obj.reads in task.obj.input_reads if key == "input" else e.obj.reads != "numbers")
        ]
        if takers:
            named = " or ".join(f'"{n}"' for n in takers)
            raise ConfigError(
                f'{src}: {key}.{option}: kind "{kind}" takes no {option} (kind {named} does); '
                f"change {key}.kind or remove {option}."
            )
    options = validate_options(entry.obj.Options, table, src, key)
    cls = entry.obj
    if key == "input" and cls.reads not in task.obj.input_reads:
        raise ConfigError(
            f"{src}: input.kind: task '{task.name}' reads {' or '.join(task.obj.input_reads)}, and encoding "
            f"'{kind}' reads {cls.reads}; choose another encoding."
        )
    if key == "input" and task.obj.needs_token_aligned_input and not cls.token_aligned:
        raise ConfigError(
            f"{src}: input.kind: task '{task.name}' gives one label per token, and encoding '{kind}' may split a "
            'token into several steps; choose "words" or "characters" (or "numbers").'
        )
    if key == "output" and cls.reads != "text":
        raise ConfigError(
            f"{src}: output.kind: task '{task.name}' writes tokens, and encoding '{kind}' reads {cls.reads}; "
            'choose "characters", "words" or "subwords".'
        )
    if getattr(options, "characters", 0) and (key == "output" or not task.obj.reads_word_characters):
        raise ConfigError(
            f"{src}: {key}.characters: task '{task.name}' "
            + ("writes word ids alone" if key == "output" else "reads one id per word")
            + f"; remove {key}.characters (the tag and classify tasks read each word's characters)."
        )
    if getattr(options, "column", "") is None and not getattr(options, "columns", None):
        # the task's column, named in the export's metadata: what `seqpipe predict --file` reads by default
        options = options.model_copy(
            update={"column": task.obj.input_column if key == "input" else task.obj.output_column}
        )
    encoding = cls(options)
    encoding.table = key
    return encoding


def _check_task_fit(config: PipelineConfig, task: Entry, cell: Entry, topology: Entry, src: str) -> None:
    """Combinations a task cannot train or decode are refused before any data is read."""
    from seqpipe.contracts import declares_layers  # torch-level import, deferred like all model code

    rules = task.obj.initial_states
    if config.model.initial_state not in rules:
        raise ConfigError(
            f"{src}: model.initial_state: task '{config.task.name}' accepts {', '.join(repr(r) for r in rules)}, "
            f"found '{config.model.initial_state}'; 'conditioned' needs a task with a condition (generate)."
        )
    for precision in PRECISIONS:
        if getattr(config.export, precision) and config.model.initial_state == "conditioned":
            raise ConfigError(
                f"{src}: export.{precision}: {precision} copies are checked from the initial state, which "
                f"'conditioned' makes per sequence; remove {precision} = true."
            )
    if task.obj.needs_sequence_encoder and not declares_layers(topology.obj):
        raise ConfigError(
            f"{src}: model.topology: task '{config.task.name}' exports its encoder as a sequence graph built from "
            f"the topology's declared layers, and topology '{config.model.topology}' declares none (Topology.layers); "
            "choose 'single' or 'stacked'."
        )
    device = training_device(config.training.device, f"{src}: training.device")
    if config.training.precision == "fp16" and device != "cuda":
        raise ConfigError(
            f"{src}: training.precision: fp16 training needs a CUDA device (a gradient scaler on GPU "
            f'arithmetic), and this run trains on the CPU (training.device = "{config.training.device}"); use '
            '"bf16" (CPU autocast) or "fp32".'
        )
    accepted = inspect.signature(task.obj.batches).parameters
    if (
        config.training.bucket
        and "bucket" not in accepted
        and not any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    ):
        raise ConfigError(
            f"{src}: training.bucket: task '{config.task.name}' cannot bucket its batches by length (its "
            "batches() takes no 'bucket' keyword); remove training.bucket or add it to the task."
        )
    monitor = config.training.monitor
    if monitor is not None:
        known = task.obj.declared_metrics()
        if monitor not in known:
            raise ConfigError(
                f"{src}: training.monitor: task '{config.task.name}' reports no validation metric '{monitor}'"
                f"{did_you_mean(monitor, list(known))}; choose one of {', '.join(sorted(known))}."
            )
    if task.obj.needs_causal and not topology.obj.causal:
        raise ConfigError(
            f"{src}: model.topology: task '{config.task.name}' decodes step by step, and topology "
            f"'{config.model.topology}' reads the future; choose 'single' or 'stacked'."
        )


def training_device(wanted: str, where: str) -> str:
    """ "cuda" or "cpu" for ``[training] device``: auto is CUDA when torch sees a GPU; cuda where it
    sees none is a config error (so `seqpipe check` says it, not a crash mid-run)."""
    import torch

    available = torch.cuda.is_available()
    if wanted == "cuda" and not available:
        raise ConfigError(
            f'{where}: "cuda" but torch sees no CUDA GPU here (torch {torch.__version__}, '
            f'built {"with" if torch.version.cuda else "without"} CUDA); use "auto" or "cpu", or install a '
            "CUDA build of torch on a GPU machine."
        )
    return "cuda" if wanted == "cuda" or (wanted == "auto" and available) else "cpu"


def _graphs(
    config: PipelineConfig, cell: Entry, topology: Entry, task: Entry, src: str, no_step: str | None = None
) -> list[str]:
    """The graphs to export, step first, then the task's own; a graph the model cannot have is a
    config error, not a crash after training. ``no_step``: why the task's options rule out a step graph."""
    from seqpipe.contracts import declares_layers  # torch-level import, deferred like all model code

    causal = topology.obj.causal
    if no_step is not None and config.export.graphs is not None and "step" in config.export.graphs:
        raise ConfigError(
            f"{src}: export.graphs: no 'step' graph: {no_step}; remove 'step' (graphs = [\"sequence\"]) "
            "or choose a head that streams."
        )
    # a sequence graph is native RNN operators or Loops over each exported cell (a topology that
    # declares its layers), or, for any causal model, a Loop around the step graph
    unsupported = (
        None
        if declares_layers(topology.obj)
        else f"topology '{config.model.topology}' declares no layers (Topology.layers)"
    )
    no_sequence = None if unsupported is None or (causal and no_step is None) else unsupported
    wanted: list[str] | None = list(config.export.graphs) if config.export.graphs is not None else None
    task_default = task.obj.default_graphs
    extra = list(task.obj.extra_graphs)
    if wanted is not None and task_default == ():
        raise ConfigError(
            f"{src}: export.graphs: task '{config.task.name}' exports its own graphs ({', '.join(extra)}); "
            "remove export.graphs."
        )
    if wanted is None and task_default is not None:
        wanted = list(task_default)
        if not wanted:  # the task exports only its own graphs (seq2seq: encoder and decoder)
            return extra
    if wanted is None:
        wanted = (["step"] if causal and no_step is None else []) + (["sequence"] if no_sequence is None else [])
        if not wanted:
            no_step_reason = f"topology '{config.model.topology}' is not causal" if not causal else no_step
            raise ConfigError(
                f"{src}: model: {no_step_reason} (no step graph) and {unsupported} (no sequence graph), so "
                "nothing can be exported; choose a causal topology or one that declares its layers."
            )
    if "step" in wanted and not causal:
        raise ConfigError(
            f"{src}: export.graphs: 'step' needs a causal topology, and '{config.model.topology}' reads the "
            "future; remove 'step' (export graphs = [\"sequence\"]) or choose 'single'/'stacked'."
        )
    if "sequence" in wanted and no_sequence is not None:
        no_loop = "the topology is not causal" if not causal else no_step  # nothing to loop a step graph over either
        raise ConfigError(
            f"{src}: export.graphs: no 'sequence' graph: {no_sequence} and {no_loop}; "
            "choose a built-in topology or a causal one."
        )
    return sorted(set(wanted), key=["step", "sequence"].index) + extra


def _data_source(data: DataConfig, pipeline_path: Path, registry: Registry, folder: Path) -> DataSource:
    src = str(pipeline_path)
    if data.dataset is not None:
        dataset = registry.get("dataset", data.dataset, f"{src}: data.dataset").obj
        return DataSource(
            dataset.path, data.format or dataset.format, data, f"{src}: data.dataset", dataset.validation, dataset.test
        )
    key = "path" if data.path is not None else "train"
    files = {
        name: _data_file(getattr(data, name), name, pipeline_path, folder)
        for name in (key, "validation", "test")
        if getattr(data, name) is not None
    }
    fmt = infer_format(files[key], data.format, f"{src}: data.{key}")
    for name, file in files.items():
        if infer_format(file, data.format, f"{src}: data.{name}") != fmt:
            raise ConfigError(
                f"{src}: data.{name}: '{file.name}' is not in the training file's format ({fmt}); "
                "give every split in one format."
            )
    return DataSource(files[key], fmt, data, f"{src}: data.{key}", files.get("validation"), files.get("test"))


def _data_file(value: str, key: str, pipeline_path: Path, folder: Path) -> Path:
    file = Path(value)
    if not file.is_absolute():
        file = folder / file
    if not file.is_file():
        raise ConfigError(
            f"{pipeline_path}: data.{key}: file '{file}' does not exist; paths are relative to the pipeline file."
        )
    return file


def _missing_attribute_owner(exc: BaseException) -> str | None:
    """The class named by "'X' object has no attribute 'y'" (torch's modules word it so too), or None."""
    if not isinstance(exc, AttributeError):
        return None
    match = re.match(r"'(\w+)' object has no attribute '\w+'", str(exc))
    return match.group(1) if match else None


def _contract_hint(exc: BaseException, entry: Entry) -> str | None:
    """For a missing attribute the plugin's contract declares: what the contract asks of it."""
    match = re.match(r"'\w+' object has no attribute '(\w+)'", str(exc)) if isinstance(exc, AttributeError) else None
    if match is None:
        return None
    from seqpipe import contracts

    contract = {"cell": contracts.Cell, "topology": contracts.Topology, "task": contracts.Task}.get(entry.kind)
    if contract is None:
        return None
    declared = {name for cls in contract.__mro__ for name in (*vars(cls), *getattr(cls, "__annotations__", {}))}
    if match.group(1) not in declared:
        return None
    return (
        f"'{match.group(1)}' is part of the {contract.__name__} contract: define it, or set in the constructor what "
        "it reads ("
        + {
            "cell": "a cell passes input_size and hidden_size to Cell.__init__ and declares state_sizes "
            "when its states differ in width",
            "topology": "a topology's constructor sets input_size, hidden_size, num_slots, output_size, "
            "state_names and state_sizes",
            "task": "a task calls Task.__init__(options, data)",
        }[entry.kind]
        + ")"
    )
