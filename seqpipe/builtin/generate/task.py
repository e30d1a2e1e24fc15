"""One-to-many generation: a condition sets the initial state, then the network writes a sequence.

As in the seed, a condition — a label (e.g. a gender) or a vector of numbers — is turned into the
first hidden state by a separate small network (the ``conditioned`` initial state); decoding starts at ``<sos>``,
feeds each emitted character back in, and stops at ``<eos>`` or a length limit. Decoding is greedy,
sampled at a temperature (seeded) or a beam search, all in :mod:`seqpipe.serving.decoding` so the ONNX
graphs decode exactly as torch does. Exports: ``init.onnx`` (condition → state) and ``step.onnx``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torchmetrics.functional.text import perplexity

from seqpipe import hookimpl
from seqpipe.contracts import Task, Topology
from seqpipe.data import number, read_records, text_values
from seqpipe.encoding import PAD, UNK, CharVocabulary
from seqpipe.errors import DataError
from seqpipe.initial_state import ConditionedInitialState
from seqpipe.models import SequenceModel, token_embedding
from seqpipe.onnx.parity import compare, report
from seqpipe.onnx.spec import base_spec, state_io, states_spec, write_metadata
from seqpipe.onnx.torch_export import export_module
from seqpipe.signature import state_output

IGNORE = -100
SOS, EOS = "<sos>", "<eos>"


class GenerateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text_column: str = Field("text", description="column holding the sequences to learn (e.g. names)")
    condition_column: str = Field(
        "label", description="column holding the condition (a label) that starts each sequence"
    )
    condition_columns: list[str] | None = Field(
        None,
        min_length=1,
        description="instead of a label: numeric columns forming a condition vector (standardised on training rows)",
    )
    max_length: int = Field(32, ge=1, description="characters kept per sequence, and the decoding length limit")
    embedding_size: int = Field(32, ge=1)
    condition_size: int = Field(16, ge=1, description="width of the condition's embedding in the initial-state network")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    samples: int = Field(8, ge=1, description="names sampled per condition for the run's report")
    temperature: float = Field(0.8, gt=0.0, description="sampling temperature for the report's samples")
    beam: int = Field(5, ge=1, description="beam width for the report's beam-search results")


@dataclass
class Batch:
    tokens: torch.Tensor  # [B, T]: <sos> c1 … cn, 0-padded
    lengths: torch.Tensor  # [B]: n + 1
    targets: torch.Tensor  # [B, T]: c1 … cn <eos>, IGNORE-padded
    condition: torch.Tensor  # [B] label ids, or [B, D] standardised condition vectors


class InitGraph(nn.Module):
    """``condition [B] -> state_out.*``: the exported initial-state network."""

    def __init__(self, initial: ConditionedInitialState) -> None:
        super().__init__()
        self.initial = initial

    def forward(self, condition: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.initial.from_condition(condition)


class GenerateTask(Task):
    default_input = None  # reads its own columns (see its options): no [input] table
    Options = GenerateOptions
    monitor = "perplexity"
    monitor_mode = "min"
    default_graphs = ("step",)
    extra_graphs = ("init",)
    needs_causal = True
    initial_states = ("conditioned",)
    example_pipeline = {
        "data": {"dataset": "census-names"},
        "model": {"initial_state": "conditioned"},
        "task": {"options": {"text_column": "name", "condition_column": "gender"}},
    }

    def __init__(self, options: GenerateOptions, data: Any) -> None:
        self.options = options
        self.data = data
        self.vocabulary: CharVocabulary | None = None
        self.conditions: list[str] = []  # labels (label conditions)
        self.vector_mean = self.vector_std = np.zeros(0)  # scaling of vector conditions, from training rows
        self.examples: dict[str, list[tuple[list[int], int]]] = {}
        self.texts: dict[str, list[str]] = {}
        self._bigram: dict[str, float] = {}

    @property
    def vector(self) -> bool:
        return self.options.condition_columns is not None

    @property
    def predict_example(self) -> str:
        first = ",".join(f"{v:g}" for v in self.vector_mean) if self.vector else self.conditions[0]
        return f"--condition {first} --count 5 --temperature 0.8"

    # -- data ---------------------------------------------------------------------------------
    def prepare(self) -> dict[str, int]:
        o = self.options
        train, validation, test = self.data.splits(self._read, key=None if self.vector else (lambda p: p[1]))
        pairs = train + validation + test
        long = sum(len(t) > o.max_length for t, _ in pairs)
        self.data.account.add(
            "truncated_texts", long, f"texts cut to task.options.max_length = {o.max_length} characters"
        )
        train, validation, test = ([(t[: o.max_length], c) for t, c in part] for part in (train, validation, test))
        if self.vector:
            values = np.array([c for _, c in train], dtype=np.float64)
            self.vector_mean, self.vector_std = (
                values.mean(axis=0),
                np.where(values.std(axis=0) > 0, values.std(axis=0), 1.0),
            )
        else:
            self.conditions = sorted({c for _, c in pairs})
        chars = sorted({ch for text, _ in train for ch in text})
        self.vocabulary = CharVocabulary((PAD, UNK, SOS, EOS, *chars), False, o.max_length)
        for name, part in zip(self.splits, (train, validation, test)):
            self.texts[name] = [t for t, _ in part]
            self.examples[name] = [(self.vocabulary.encode(t), self._encode_condition(c)) for t, c in part]
        if not self.examples["test"]:
            raise DataError(f"{self.data.path}: too few rows for a test split; add data or raise data.test_fraction.")
        return {name: len(part) for name, part in self.examples.items()}

    def _read(self, path) -> list[tuple[str, Any]]:
        o = self.options
        columns = o.condition_columns or [o.condition_column]
        rows = read_records(
            path, self.data.format, [o.text_column, *columns], self.data.where, account=self.data.account
        )
        texts = text_values(rows, o.text_column, path, "generate")
        if self.vector:
            return [
                (t, tuple(number(r, c, path, "vector conditions are numbers") for c in columns))
                for t, r in zip(texts, rows)
            ]
        return [(t, str(r[o.condition_column])) for t, r in zip(texts, rows)]

    def _encode_condition(self, condition) -> int | tuple[float, ...]:
        """A label's index, or a vector standardised with the training rows' mean and std."""
        if self.vector:
            return tuple(((np.asarray(condition) - self.vector_mean) / self.vector_std).astype(np.float32).tolist())
        return self.conditions.index(condition)

    @property
    def sos_id(self) -> int:
        return 2

    @property
    def eos_id(self) -> int:
        return 3

    def collate(self, examples: list[tuple[list[int], int]]) -> Batch:
        lengths = torch.tensor([len(ids) + 1 for ids, _ in examples], dtype=torch.int64)
        tokens = torch.zeros(len(examples), int(lengths.max()), dtype=torch.int64)
        targets = torch.full_like(tokens, IGNORE)
        for row, (ids, _) in enumerate(examples):
            tokens[row, : len(ids) + 1] = torch.tensor([self.sos_id, *ids])
            targets[row, : len(ids) + 1] = torch.tensor([*ids, self.eos_id])
        condition = torch.tensor([c for _, c in examples], dtype=torch.float32 if self.vector else torch.int64)
        return Batch(tokens, lengths, targets, condition)

    # -- model --------------------------------------------------------------------------------
    def build_model(
        self,
        make_topology: Callable[[int], Topology],
        initial_state: str = "conditioned",
        initial_state_scale: float = 0.1,
    ) -> SequenceModel:
        o = self.options
        topology = make_topology(o.embedding_size)
        initial = ConditionedInitialState(
            len(self.vector_mean) if self.vector else len(self.conditions),
            topology.state_shapes,
            self.condition_spec(),
            o.condition_size,
        )
        return SequenceModel(
            token_embedding(len(self.vocabulary), o.embedding_size, o.dropout),
            topology,
            nn.Linear(topology.output_size, len(self.vocabulary)),
            initial,
            output="softmax",
            per_step=True,
            dropout=o.dropout,
        )

    def loss(self, model: SequenceModel, batch: Batch) -> torch.Tensor:
        logits, _ = model(batch.tokens, batch.lengths, model.initial.from_condition(batch.condition))  # [B, T, V]
        return F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE)

    @torch.no_grad()
    def evaluate(self, model: SequenceModel, split: str, batch_size: int = 512) -> dict[str, float]:
        model.eval()
        total, count = 0.0, 0
        for batch in self.batches(split, batch_size):
            logits, _ = model(batch.tokens, batch.lengths, model.initial.from_condition(batch.condition))
            n = int((batch.targets != IGNORE).sum())
            # torchmetrics' perplexity is exp(mean NLL) per batch; weight by characters to combine batches
            total += math.log(float(perplexity(logits, batch.targets, ignore_index=IGNORE))) * n
            count += n
        return {
            "loss": total / count,
            "perplexity": math.exp(total / count),
            "bigram_perplexity": self.bigram_perplexity(split),
            "characters": count,
            "examples": len(self.examples[split]),
        }

    def bigram_perplexity(self, split: str) -> float:
        """Per-character perplexity of a character bigram model conditioned on the label (one shared
        bigram for vector conditions), with add-k smoothing (k chosen on the validation split): the
        baseline the network must beat."""
        if split in self._bigram:
            return self._bigram[split]
        counts: Counter = Counter()
        context: Counter = Counter()
        for ids, c in self.examples["train"]:
            c = 0 if self.vector else c
            seq = [self.sos_id, *ids, self.eos_id]
            for a, b in zip(seq, seq[1:]):
                counts[(c, a, b)] += 1
                context[(c, a)] += 1
        vocab = len(self.vocabulary)

        def ppl(part: str, k: float) -> float:
            nll, n = 0.0, 0
            for ids, c in self.examples[part]:
                c = 0 if self.vector else c
                seq = [self.sos_id, *ids, self.eos_id]
                for a, b in zip(seq, seq[1:]):
                    nll -= math.log((counts[(c, a, b)] + k) / (context[(c, a)] + k * vocab))
                    n += 1
            return math.exp(nll / n)

        k = min((0.01, 0.03, 0.1, 0.3, 1.0), key=lambda k: ppl("validation", k))
        self._bigram[split] = ppl(split, k)
        return self._bigram[split]

    # -- export -------------------------------------------------------------------------------
    def step_example(self, batch: int = 2) -> torch.Tensor:
        return torch.full((batch,), self.sos_id, dtype=torch.int64)

    def parity_inputs(self, split: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
        batch = self.collate(self.examples[split][:limit])
        return batch.tokens.numpy(), batch.lengths.numpy()

    @torch.no_grad()
    def parity_start(self, model: SequenceModel, split: str, limit: int) -> dict[str, np.ndarray]:
        """Each test sequence starts from the state its condition gives."""
        condition = self.collate(self.examples[split][:limit]).condition
        return {n: s.numpy() for n, s in zip(model.state_names, model.initial.eval().from_condition(condition))}

    def export_graph(
        self,
        kind: str,
        model: SequenceModel,
        path: Path,
        *,
        resolved,
        opset: int,
        exporter: str,
        tolerance: float,
        limit: int,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``init.onnx``: ``condition`` (label ids int64 [batch], or standardised vectors float32
        [batch, D]) → ``state_out.<name>`` [batch, slots, size]."""
        from seqpipe.serving.runtime import OnnxGraph

        model = model.eval().cpu()
        outputs = [state_output(n) for n in model.state_names]
        batch = torch.export.Dim("batch", min=1)
        example = torch.zeros(2, len(self.vector_mean)) if self.vector else torch.zeros(2, dtype=torch.int64)
        described = export_module(
            InitGraph(model.initial).eval(),
            (example,),
            path,
            input_names=["condition"],
            output_names=outputs,
            dynamic_shapes=({0: batch},),
            opset=opset,
            exporter=exporter,
        )
        spec = base_spec(kind, resolved, model, self, opset=opset, exporter=described)
        spec.update(
            {
                "inputs": [
                    {"name": "condition", "dtype": "float32", "shape": ["batch", len(self.vector_mean)]}
                    if self.vector
                    else {"name": "condition", "dtype": "int64", "shape": ["batch"], "labels": self.conditions}
                ],
                "outputs": state_io(model, "out"),
                "states": states_spec(model),
                "initial_state": model.initial.spec(),
            }
        )
        write_metadata(path, spec)
        # every label (for label conditions), and the test rows' conditions as one batch
        condition = self.collate(self.examples["test"][:limit]).condition.numpy()
        if not self.vector:
            condition = np.concatenate([np.arange(len(self.conditions)), condition])
        runner = OnnxGraph(path, device="cpu")
        served = runner.session.run(None, {"condition": condition})
        with torch.no_grad():
            expected = model.initial.from_condition(torch.from_numpy(condition))
        worst: dict[str, dict[str, dict[str, float]]] = {}
        compare(
            worst,
            "ort_init_vs_torch_init",
            {f"state.{n}": a for n, a in zip(model.state_names, served)},
            {f"state.{n}": b.numpy() for n, b in zip(model.state_names, expected)},
        )
        return spec, report(worst, tolerance, condition, np.ones(len(condition), np.int64), runner)

    def encoding_spec(self) -> dict[str, Any]:
        return {
            "input": {"dtype": "int64", **self.vocabulary.to_spec(), "sos_id": self.sos_id, "eos_id": self.eos_id},
            "output": {
                "kind": "probabilities",
                "size": len(self.vocabulary),
                "labels": list(self.vocabulary.symbols),
                "read": "y: probabilities of the next character; feed the chosen id as the next x; stop at <eos>",
            },
            "condition": self.condition_spec(),
            "decoding": {"max_length": self.options.max_length, "start": SOS, "end": EOS},
        }

    def condition_spec(self) -> dict[str, Any]:
        if self.vector:
            return {
                "kind": "vector",
                "columns": self.options.condition_columns,
                "size": len(self.vector_mean),
                "scaling": {
                    "mean": self.vector_mean.tolist(),
                    "std": self.vector_std.tolist(),
                    "apply": "(value - mean) / std",
                },
                "graph": "init.onnx",
                "input": "float32 [batch, size], standardised",
            }
        return {
            "kind": "label",
            "labels": self.conditions,
            "graph": "init.onnx",
            "input": "int64 [batch], the label's index",
        }

    # -- report -------------------------------------------------------------------------------
    def write_report(self, model: SequenceModel, run_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
        """Samples for every condition, decoded from the exported ONNX graphs (greedy, sampled, beam),
        and the share of sampled names that are not in the training data."""
        from seqpipe.builtin.generate.serve import Generator

        generator = Generator(run_dir, device="cpu")
        seen = set(self.texts["train"])
        o = self.options
        samples: dict[str, Any] = {}
        novel = []
        shown = (
            self.conditions
            if not self.vector
            else [
                ",".join(f"{v:g}" for v in np.round(np.asarray(c) * self.vector_std + self.vector_mean, 4))
                for c in sorted({c for _, c in self.examples["test"]})[:2]
            ]
        )
        for condition in shown:
            sampled = generator.generate(condition, count=o.samples, temperature=o.temperature, seed=0)
            novel += [s["text"] not in seen for s in sampled]
            samples[condition] = {
                "greedy": generator.generate(condition, count=1)[0]["text"],
                f"beam_{o.beam}": [s["text"] for s in generator.generate(condition, count=o.beam, beam=o.beam)],
                f"sampled_t{o.temperature:g}": [s["text"] for s in sampled],
            }
            log(f"samples {condition}: " + ", ".join(samples[condition][f"sampled_t{o.temperature:g}"]))
        return {"samples": samples, "sampled_not_in_training": float(np.mean(novel))}


@hookimpl
def register_tasks(register):
    register("generate", GenerateTask)
