"""Encoder–decoder (many-to-many, unaligned): read a whole source sequence, then write a target one.

The source is the pipeline's ``[input]`` (characters, words or subwords), the target its
``[output]``: the output encoding splits each target into tokens (characters, words, subword
pieces) and joins decoded tokens back into text. As in the seed, the encoder's final state initialises the decoder;
with ``attention`` the decoder
also looks back at every encoder output at each step (Luong-style: after the decoder cell, its
output queries the encoder outputs, additive or dot-product scores, masked to each source's
length), which removes the seed's "information bottleneck" of a single state vector.

Exports: ``encoder.onnx`` (source ids, lengths → memory, state; native ONNX RNN operators) and
``decoder.onnx`` (one target step: token, state and — with attention — memory, memory lengths →
next-token probabilities, attention weights, new state).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torchmetrics.functional.text import word_error_rate

from seqpipe import hookimpl
from seqpipe.contracts import State, Task, Topology
from seqpipe.encoding import PAD, UNK
from seqpipe.errors import DataError
from seqpipe.initial_state import InitialState
from seqpipe.inputs import encode_all
from seqpipe.models import input_layer, input_width, pad_inputs, token_embedding
from seqpipe.onnx.builder import GraphBuilder, finish_model, optional_state_inputs, state_value_infos, tensor_info
from seqpipe.onnx.native import emit_topology
from seqpipe.onnx.parity import compare, outputs, report, three_way
from seqpipe.onnx.spec import base_spec, state_io, states_spec, write_metadata
from seqpipe.onnx.torch_export import check_onnx, export_module
from seqpipe.signature import state_input, state_output

IGNORE = -100
SOS, EOS = "<sos>", "<eos>"
MASKED = -1e9  # attention score of padded source positions: exp() underflows to exactly 0


class Seq2SeqOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attention: Literal["none", "additive", "dot"] = Field(
        "additive", description="how the decoder looks back at the encoder outputs"
    )
    embedding_size: int = Field(64, ge=1)
    max_target_length: int = Field(
        32, ge=2, description="target tokens kept, <eos> included (cuts are counted); also the decoding length limit"
    )
    min_target_count: int = Field(1, ge=1, description="target tokens seen fewer times in training become <unk>")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    heatmap_examples: int = Field(4, ge=0, description="test examples drawn in attention.png (with attention)")


@dataclass
class Batch:
    source: torch.Tensor  # [B, S]
    source_lengths: torch.Tensor  # [B]
    target_in: torch.Tensor  # [B, T]: <sos> t1 … tn
    target_lengths: torch.Tensor  # [B]: n + 1
    targets: torch.Tensor  # [B, T]: t1 … tn <eos>, IGNORE-padded


class Attention(nn.Module):
    """Scores a query against every memory position, masked to each source's length.

    query [B, T, H], memory [B, S, H], mask [B, S] → context [B, T, H], weights [B, T, S].
    """

    def __init__(self, kind: str, hidden: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "additive":  # Bahdanau: v · tanh(W_q q + W_k m)
            self.query = nn.Linear(hidden, hidden, bias=False)
            self.key = nn.Linear(hidden, hidden)
            self.score = nn.Linear(hidden, 1, bias=False)

    def forward(
        self, query: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "dot":
            scores = query @ memory.transpose(1, 2)  # [B, T, S]
        else:
            scores = self.score(torch.tanh(self.query(query).unsqueeze(2) + self.key(memory).unsqueeze(1))).squeeze(3)
        scores = scores.masked_fill(~mask.unsqueeze(1), MASKED)
        weights = torch.softmax(scores, dim=-1)
        return weights @ memory, weights


class Seq2SeqModel(nn.Module):
    """Source tokens → encoder topology → (final state) → decoder topology (→ attention) → head."""

    def __init__(
        self,
        source_embed: nn.Module,
        target_vocab: int,
        embedding_size: int,
        encoder: Topology,
        decoder: Topology,
        attention: str,
        initial: InitialState,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.initial = initial
        self.source_embed = source_embed  # token embedding, or nothing for number vectors
        self.body = encoder  # "body": the engine reads causal/sizes/state names from it
        self.target_embed = token_embedding(target_vocab, embedding_size, dropout)
        self.decoder = decoder
        self.attention = Attention(attention, decoder.output_size) if attention != "none" else None
        self.combine = nn.Linear(2 * decoder.output_size, decoder.output_size) if self.attention else None
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(decoder.output_size, target_vocab)
        self.state_names, self.num_slots, self.hidden_size = encoder.state_names, encoder.num_slots, encoder.hidden_size
        self.state_shapes = encoder.state_shapes

    def encode(self, source: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, State]:
        """memory [B, S, H] (zero past each length) and the final state, which starts the decoder."""
        return self.body(self.source_embed(source), lengths, self.initial(source.shape[0], source.device))

    def _read(
        self, out: torch.Tensor, memory: torch.Tensor, memory_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decoder outputs [B, T, H] → logits [B, T, V] and attention weights [B, T, S] (None without attention)."""
        if self.attention is None:
            return self.head(self.dropout(out)), None
        mask = torch.arange(memory.shape[1], device=memory.device).unsqueeze(0) < memory_lengths.unsqueeze(1)  # [B, S]
        context, weights = self.attention(out, memory, mask)
        attended = torch.tanh(self.combine(torch.cat([out, context], dim=-1)))  # Luong's attentional vector
        return self.head(self.dropout(attended)), weights

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None, State]:
        """Teacher-forced: logits [B, T, V] for every target step, attention weights, final decoder state."""
        memory, state = self.encode(batch.source, batch.source_lengths)
        out, state = self.decoder(self.target_embed(batch.target_in), batch.target_lengths, state)
        logits, weights = self._read(out, memory, batch.source_lengths)
        return logits, weights, state

    def decode_step(
        self, token: torch.Tensor, memory: torch.Tensor, memory_lengths: torch.Tensor, state: State
    ) -> tuple[torch.Tensor, torch.Tensor | None, State]:
        """One target step: token [B] → probabilities [B, V], attention [B, S] (or None), new state."""
        h, state = self.decoder.step(self.target_embed(token), state)  # [B, H]
        logits, weights = self._read(h.unsqueeze(1), memory, memory_lengths)
        return torch.softmax(logits[:, 0], dim=-1), (weights[:, 0] if weights is not None else None), state


class DecoderStep(nn.Module):
    """The exported decoder step: (x, [memory, memory_lengths,] *state_in) → (y, [attention,] *state_out)."""

    def __init__(self, model: Seq2SeqModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_lengths: torch.Tensor, *state: torch.Tensor):
        y, weights, new = self.model.decode_step(x, memory, memory_lengths, tuple(state))
        return (y, weights, *new)


class PlainDecoderStep(nn.Module):
    """Without attention the decoder never reads the memory: (x, *state_in) → (y, *state_out)."""

    def __init__(self, model: Seq2SeqModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, *state: torch.Tensor):
        y, _, new = self.model.decode_step(
            x, torch.zeros(x.shape[0], 1, self.model.decoder.output_size), torch.ones_like(x), tuple(state)
        )
        return (y, *new)


class Seq2SeqTask(Task):
    Options = Seq2SeqOptions
    monitor = "token_error_rate"
    monitor_mode = "min"
    metric_modes = {"token_error_rate": "min", "exact_match": "max", "chrf": "max", "bleu": "max", "loss": "min"}
    input_column = "source"
    # BLEU counts word 1-4-grams: on one-word targets (g2p words, transliterated names) it is 0 or
    # undefined, so it is reported when the training targets average at least four words
    bleu_reported = True
    BLEU_MIN_WORDS = 4
    default_output = "words"
    output_column = "target"
    default_graphs = ()
    extra_graphs = ("encoder", "decoder")
    needs_causal = True  # the decoder steps; it is built like the encoder, so both must be causal
    needs_sequence_encoder = True  # encoder.onnx is built by emit_topology (native operators or cell loops)
    initial_states = ("zeros", "learnable")

    @property
    def predict_example(self) -> str:
        """Two test sources of this run's own data, quoted for the shell (number vectors as JSON)."""
        import shlex

        return " ".join(shlex.quote(self._shown(s)) for s, _ in self.pairs.get("test", [])[:2]) or '"some source text"'

    def _shown(self, source: Any) -> str:
        """A source as a user types it: the text, or number vectors as JSON."""
        return (
            json.dumps(np.round(np.asarray(source, np.float64), 4).tolist())
            if self.source.reads == "numbers"
            else source
        )

    example_pipeline = {
        "data": {"dataset": "cmudict-g2p"},
        "input": {"column": "word", "min_count": 1},
        "output": {"column": "phonemes", "min_count": 1},
    }

    def __init__(self, options: Seq2SeqOptions, data: Any) -> None:
        self.options = options
        self.data = data
        self.source = data.input
        self.target = data.output
        self.target_symbols: list[str] = []
        self.examples: dict[str, list[tuple[list[int], list[int]]]] = {}
        self.pairs: dict[str, list[tuple[str, str]]] = {}
        self._nearest: dict[str, list[str]] = {}  # split -> the nearest-neighbour baseline's targets

    # -- data ---------------------------------------------------------------------------------
    def prepare(self) -> dict[str, int]:
        o = self.options
        train, validation, test = self.data.splits(self._read)
        self.source.fit([s for s, _ in train])
        self.target.fit([t for _, t in train])
        keep = o.max_target_length - 1  # one step is <eos>
        tokens = {
            name: [self.target.units(t) for _, t in part] for name, part in zip(self.splits, (train, validation, test))
        }
        long = [ts for part in tokens.values() for ts in part if len(ts) > keep]
        self.data.account.add(
            "truncated_targets",
            len(long),
            f"targets cut to task.options.max_target_length - 1 = {keep} tokens "
            f"(one step is <eos>; {sum(len(ts) - keep for ts in long):,} tokens neither trained on nor scored)",
        )
        self.bleu_reported = np.mean([len(t.split()) for _, t in train]) >= self.BLEU_MIN_WORDS
        counts = Counter(t for ts in tokens["train"] for t in ts)
        self.target_symbols = [PAD, UNK, SOS, EOS, *sorted(t for t, n in counts.items() if n >= o.min_target_count)]
        rare = sum(n for t, n in counts.items() if n < o.min_target_count)
        self.data.account.add(
            "rare_target_tokens",
            rare,
            f"training target tokens seen fewer than task.options.min_target_count = "
            f"{o.min_target_count} times, trained as <unk>",
        )
        index = {t: i for i, t in enumerate(self.target_symbols)}
        for name, part in zip(self.splits, (train, validation, test)):
            cut = [ts[:keep] for ts in tokens[name]]
            self.pairs[name] = [(s, self.target.join(ts)) for (s, _), ts in zip(part, cut)]
            sources = encode_all(self.source, [s for s, _ in part], self.data.account, f"{name} sources")
            self.examples[name] = [(x, [index.get(t, 1) for t in ts]) for x, ts in zip(sources, cut)]
        if not self.examples["test"]:
            raise DataError(f"{self.data.path}: too few rows for a test split; add data or raise data.test_fraction.")
        return {name: len(part) for name, part in self.examples.items()}

    def _read(self, path) -> list[tuple[str, str]]:
        source_column = self.source.columns(self.input_column)[0]
        target_column = self.target.columns(self.output_column)[0]
        rows = self.data.records(path, [source_column, target_column])
        return list(
            zip(
                self.source.read(rows, self.input_column, path, "seq2seq"),
                self.target.read(rows, self.output_column, path, "seq2seq"),
            )
        )

    def collate(self, examples: list[Any]) -> Batch:
        return collate(examples)  # the module's collate below: the default batches() calls this one

    def example_length(self, example: Any) -> int:
        return len(example[0]) + len(example[1])  # source and target steps: what a batch pads

    # -- model --------------------------------------------------------------------------------
    def build_model(
        self, make_topology: Callable[[int], Topology], initial_state: str = "zeros", initial_state_scale: float = 0.1
    ) -> Seq2SeqModel:
        o = self.options
        encoder, decoder = make_topology(input_width(self.source, o.embedding_size)), make_topology(o.embedding_size)
        initial = InitialState(initial_state, encoder.state_shapes, initial_state_scale)
        return Seq2SeqModel(
            input_layer(self.source, o.embedding_size, o.dropout),
            len(self.target_symbols),
            o.embedding_size,
            encoder,
            decoder,
            o.attention,
            initial,
            o.dropout,
        )

    def loss(self, model: Seq2SeqModel, batch: Batch) -> torch.Tensor:
        logits, _, _ = model(batch)
        return F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE)

    @torch.no_grad()
    def greedy(self, model: Seq2SeqModel, batch: Batch) -> list[list[int]]:
        """Greedy decoding of a batch in torch: target ids per example, without <sos>/<eos>."""
        memory, state = model.encode(batch.source, batch.source_lengths)
        token = torch.full((batch.source.shape[0],), SOS_ID, dtype=torch.int64)
        out: list[list[int]] = [[] for _ in range(len(token))]
        done = torch.zeros(len(token), dtype=torch.bool)
        for _ in range(self.options.max_target_length):
            probs, _, state = model.decode_step(token, memory, batch.source_lengths, state)
            token = probs.argmax(dim=1)
            for row in torch.nonzero(~done & (token != EOS_ID)).flatten().tolist():
                out[row].append(int(token[row]))
            done |= token == EOS_ID
            if bool(done.all()):
                break
        return out

    @torch.no_grad()
    def evaluate(self, model: Seq2SeqModel, split: str, batch_size: int = 512) -> dict[str, float]:
        model.eval()
        total, count, predicted = 0.0, 0, []
        for batch in self.batches(split, batch_size):
            logits, _, _ = model(batch)
            n = int((batch.targets != IGNORE).sum())
            total += float(F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE)) * n
            count += n
            predicted += [self.target.join([self.target_symbols[i] for i in ids]) for ids in self.greedy(model, batch)]
        reference = [t for _, t in self.pairs[split]]
        baseline = {f"baseline_{k}": v for k, v in self.scores(self._nearest_targets(split), reference).items()}
        return {"loss": total / count, **self.scores(predicted, reference), **baseline, "examples": len(predicted)}

    def _nearest_targets(self, split: str) -> list[str]:
        """The baseline: for each source, the target of the most similar training source (cosine
        similarity of character 1-3-gram TF-IDF vectors of texts; of standardised per-feature
        summaries of number vectors): what memorising the training pairs gives."""
        if split not in self._nearest:
            sources = [s for s, _ in self.pairs["train"]]
            train, queries = self._similarity_features(sources, [s for s, _ in self.pairs[split]])
            nearest = (
                np.concatenate(
                    [_dense(queries[i : i + 1024] @ train.T).argmax(axis=1) for i in range(0, queries.shape[0], 1024)]
                )
                if queries.shape[0]
                else np.zeros(0, int)
            )
            self._nearest[split] = [self.pairs["train"][j][1] for j in nearest]
        return self._nearest[split]

    def _similarity_features(self, train: list[Any], queries: list[Any]) -> tuple[Any, Any]:
        """Row vectors whose dot products rank the training sources by similarity to each query."""
        if self.source.reads == "numbers":
            from sklearn.preprocessing import StandardScaler, normalize

            from seqpipe.baselines import sequence_summaries

            scaler = StandardScaler().fit(sequence_summaries(train))
            return tuple(normalize(scaler.transform(sequence_summaries(v))) for v in (train, queries))
        from sklearn.feature_extraction.text import TfidfVectorizer

        # a source the vectorizer cannot see (no 1-3-gram of training) gets the first training target
        vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), lowercase=False).fit(train)
        return vectorizer.transform(train), vectorizer.transform(queries)

    def scores(self, predicted: list[str], reference: list[str]) -> dict[str, float]:
        """Token error rate (edit distance over the output encoding's tokens / reference tokens),
        exact match (the whole target right), and sacrebleu's corpus chrF and BLEU on the texts."""
        import sacrebleu

        spaced = lambda texts: [" ".join(self.target.units(t)) for t in texts]  # noqa: E731  one "word" per token
        scores = {
            "token_error_rate": float(word_error_rate(spaced(predicted), spaced(reference))),
            "exact_match": float(np.mean([p == r for p, r in zip(predicted, reference)])),
            "chrf": float(sacrebleu.corpus_chrf(predicted, [reference]).score),
        }
        if self.bleu_reported:
            scores["bleu"] = float(sacrebleu.corpus_bleu(predicted, [reference]).score)
        return scores

    def metric_names(self) -> dict[str, str]:
        names = super().metric_names()
        if not self.bleu_reported:
            names.pop("bleu")
        return names

    # -- export -------------------------------------------------------------------------------
    def export_graph(
        self,
        kind: str,
        model: Seq2SeqModel,
        path: Path,
        *,
        resolved,
        opset: int,
        exporter: str,
        tolerance: float,
        limit: int,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        model = model.eval().cpu()
        batch = collate(self.examples["test"][:limit])
        spec = base_spec(kind, resolved, model, self, opset=opset, exporter="")
        if kind == "encoder":
            onnx.save(self._encoder_graph(model, opset), str(path))
            check_onnx(path)
            spec.update(
                self._encoder_io(model),
                exporter="seqpipe native RNN/GRU/LSTM operators, or Loops over the exported cell",
            )
            write_metadata(path, spec)
            return spec, self._encoder_parity(model, path, batch, tolerance)
        spec["exporter"] = self._export_decoder(model, path, opset, exporter)
        spec.update(self._decoder_io(model))
        write_metadata(path, spec)
        return spec, self._decoder_parity(model, path, batch, tolerance)

    def _encoder_graph(self, model: Seq2SeqModel, opset: int) -> onnx.ModelProto:
        g = GraphBuilder(opset=opset)
        lengths32 = g.op("Cast", ["lengths"], "lengths_i32", to=TensorProto.INT32)[0]
        if self.source.dtype == "int64":
            embedded = g.op(
                "Gather", [g.const("embedding", model.source_embed[0].weight.detach().numpy()), "x"], "embed"
            )[0]  # [B, S, E]
            x_info = tensor_info("x", TensorProto.INT64, ["batch", "time"])
        else:  # number vectors are read as they are
            embedded = "x"
            x_info = tensor_info("x", TensorProto.FLOAT, ["batch", "time", self.source.size])
        time_major = g.op("Transpose", [embedded], "time_major", perm=[1, 0, 2])[0]
        initial = optional_state_inputs(g, model.initial.served_values(), "x")
        _, states, outputs = emit_topology(g, model.body, time_major, lengths32, initial)
        g.node("Transpose", [outputs], ["memory"], "memory", perm=[1, 0, 2])  # [B, S, H]
        for name, state in zip(model.state_names, states):
            g.node("Identity", [state], [state_output(name)], f"state_out_{name}")
        graph = g.graph(
            "seqpipe_seq2seq_encoder",
            [
                x_info,
                tensor_info("lengths", TensorProto.INT64, ["batch"]),
                *state_value_infos(model.state_shapes, "in", batch="state_batch"),
            ],
            [
                tensor_info("memory", TensorProto.FLOAT, ["batch", "time", model.body.output_size]),
                *state_value_infos(model.state_shapes, "out"),
            ],
        )
        return finish_model(g, graph, opset)

    def _export_decoder(self, model: Seq2SeqModel, path: Path, opset: int, exporter: str) -> str:
        b, s = torch.export.Dim("batch", min=1), torch.export.Dim("source_time", min=1)
        token = torch.full((2,), SOS_ID, dtype=torch.int64)
        state = model.initial(2)
        outputs = [state_output(n) for n in model.state_names]
        inputs_state = [state_input(n) for n in model.state_names]
        if model.attention is None:
            return export_module(
                PlainDecoderStep(model).eval(),
                (token, *state),
                path,
                input_names=["x", *inputs_state],
                output_names=["y", *outputs],
                dynamic_shapes=({0: b}, tuple({0: b} for _ in state)),
                opset=opset,
                exporter=exporter,
            )
        memory, lengths = torch.randn(2, 5, model.body.output_size), torch.tensor([5, 3])
        return export_module(
            DecoderStep(model).eval(),
            (token, memory, lengths, *state),
            path,
            input_names=["x", "memory", "memory_lengths", *inputs_state],
            output_names=["y", "attention", *outputs],
            dynamic_shapes=({0: b}, {0: b, 1: s}, {0: b}, tuple({0: b} for _ in state)),
            opset=opset,
            exporter=exporter,
        )

    def _encoder_io(self, model: Seq2SeqModel) -> dict[str, Any]:
        return {
            "inputs": [
                {
                    "name": "x",
                    "dtype": self.source.dtype,
                    "shape": ["batch", "time"] + ([self.source.size] if self.source.dtype == "float32" else []),
                },
                {"name": "lengths", "dtype": "int64", "shape": ["batch"]},
                *state_io(model, "in", optional=True),
            ],
            "outputs": [
                {
                    "name": "memory",
                    "dtype": "float32",
                    "shape": ["batch", "time", model.body.output_size],
                    "read": "feed to decoder.onnx as memory (zero past each length)",
                },
                *state_io(model, "out", read="the decoder's first state_in"),
            ],
            "states": states_spec(model),
            "initial_state": model.initial.spec(),
        }

    def _decoder_io(self, model: Seq2SeqModel) -> dict[str, Any]:
        memory = (
            [
                {"name": "memory", "dtype": "float32", "shape": ["batch", "source_time", model.body.output_size]},
                {"name": "memory_lengths", "dtype": "int64", "shape": ["batch"]},
            ]
            if model.attention
            else []
        )
        return {
            "inputs": [
                {"name": "x", "dtype": "int64", "shape": ["batch"], "read": "the previous target token (<sos> first)"},
                *memory,
                *state_io(model, "in"),
            ],
            "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch", len(self.target_symbols)]}]
            + (
                [{"name": "attention", "dtype": "float32", "shape": ["batch", "source_time"]}]
                if model.attention
                else []
            )
            + state_io(model, "out"),
            "states": states_spec(model),
            "initial_state": {"rule": "encoder", "note": "the first state_in.* is encoder.onnx's state_out.*"},
        }

    def _encoder_parity(self, model: Seq2SeqModel, path: Path, batch: Batch, tolerance: float) -> dict[str, Any]:
        from seqpipe.serving.runtime import OnnxGraph

        runner = OnnxGraph(path, device="cpu")
        memory, *states = runner.session.run(None, {"x": batch.source.numpy(), "lengths": batch.source_lengths.numpy()})
        with torch.no_grad():
            ref_memory, ref_state = model.encode(batch.source, batch.source_lengths)
        valid = np.arange(memory.shape[1])[None, :] < batch.source_lengths.numpy()[:, None]
        worst: dict[str, dict[str, dict[str, float]]] = {}
        served, reference = (
            outputs(memory, model.state_names, states),
            outputs(ref_memory, model.state_names, ref_state),
        )
        served["memory"], reference["memory"] = served.pop("y"), reference.pop("y")
        compare(worst, "ort_encoder_vs_torch_encoder", served, reference, valid, per_step=("memory",))
        return report(worst, tolerance, batch.source.numpy(), batch.source_lengths.numpy(), runner)

    @torch.no_grad()
    def _decoder_parity(self, model: Seq2SeqModel, path: Path, batch: Batch, tolerance: float) -> dict[str, Any]:
        """Teacher-forced test targets: onnxruntime's decoder step vs torch's step vs torch's fused
        whole-sequence decoder, on every valid step's probabilities (and attention) and the final states."""
        from seqpipe.serving.runtime import OnnxGraph

        runner = OnnxGraph(path, device="cpu")
        memory, state0 = model.encode(batch.source, batch.source_lengths)
        logits, weights_seq, state_seq = model(batch)
        lengths = batch.target_lengths.numpy()
        valid = np.arange(batch.target_in.shape[1])[None, :] < lengths[:, None]  # [B, T]
        names = model.state_names
        torch_state, ort_state = state0, {n: s.numpy() for n, s in zip(names, state0)}
        ys = {"torch": [], "ort": []}
        attention = {"torch": [], "ort": []}
        for t in range(batch.target_in.shape[1]):
            token = batch.target_in[:, t]
            y, w, new = model.decode_step(token, memory, batch.source_lengths, torch_state)
            feeds = {"x": token.numpy(), **{state_input(n): ort_state[n] for n in names}}
            if model.attention is not None:
                feeds.update(memory=memory.numpy(), memory_lengths=batch.source_lengths.numpy())
            out = runner.session.run(None, feeds)
            y_ort, w_ort, new_ort = out[0], (out[1] if model.attention is not None else None), out[-len(names) :]
            alive = t < lengths
            torch_state = tuple(
                torch.where(torch.from_numpy(alive).view(-1, 1, 1), a, b) for a, b in zip(new, torch_state)
            )
            ort_state = {n: np.where(alive.reshape(-1, 1, 1), a, ort_state[n]) for n, a in zip(names, new_ort)}
            ys["torch"].append(y.numpy())
            ys["ort"].append(y_ort)
            if w is not None:
                attention["torch"].append(w.numpy())
                attention["ort"].append(w_ort)
        fused = outputs(torch.softmax(logits, -1), names, state_seq)
        stepped = outputs(np.stack(ys["torch"], 1), names, torch_state)
        served = outputs(np.stack(ys["ort"], 1), names, ort_state)
        if attention["torch"]:
            fused["attention"] = weights_seq.numpy()
            stepped["attention"], served["attention"] = np.stack(attention["torch"], 1), np.stack(attention["ort"], 1)
        worst: dict[str, dict[str, dict[str, float]]] = {}
        three_way(worst, served, stepped, fused, valid, per_step=("y", "attention"))
        return report(worst, tolerance, batch.target_in.numpy(), lengths, runner)

    def encoding_spec(self) -> dict[str, Any]:
        return {
            "input": self.source.to_spec(),
            "output": {
                "kind": "probabilities",
                "size": len(self.target_symbols),
                "labels": self.target_symbols,
                "encoding": self.target.to_spec(),
                "sos_id": SOS_ID,
                "eos_id": EOS_ID,
                "join": "decoded tokens (labels of the chosen ids) joined into text by the output encoding "
                "(characters: concatenated; words: separated by spaces; subwords: the tokenizer's decoder)",
                "read": "decoder y: probabilities of the next target token; feed the chosen id as the next x; stop at "
                "<eos>",
            },
            "attention": self.options.attention,
            "decoding": {"max_length": self.options.max_target_length, "start": SOS, "end": EOS},
        }

    def _source_steps(self, shown: str) -> list[str]:
        """A source's steps as the attention plot labels them: its tokens, or step numbers."""
        if self.source.reads == "numbers":
            return [str(t + 1) for t in range(len(json.loads(shown)))]
        return [str(u) for u in self.source.units(shown)]

    # -- report -------------------------------------------------------------------------------
    def write_report(self, model: Seq2SeqModel, run_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
        """Test examples transcribed from the exported graphs, and ``attention.png`` (with attention)."""
        from seqpipe.builtin.seq2seq.serve import Transcriber

        transcriber = Transcriber(run_dir, device="cpu")
        words = [s for s, _ in self.pairs["test"][: max(self.options.heatmap_examples, 6)]]  # sources, as read
        served = transcriber.transcribe([self._shown(w) for w in words])
        examples = [
            {"source": self._shown(w), "predicted": r["text"], "reference": ref}
            for w, r, (_, ref) in zip(words, served, self.pairs["test"])
        ]
        for e in examples:
            log(f"example: {e['source']} -> {e['predicted']}   (reference: {e['reference']})")
        if model.attention is not None and self.options.heatmap_examples:
            from seqpipe.plots import plot_attention

            shown = served[: self.options.heatmap_examples]
            # rows: each emitted token, and the step that emitted <eos> (its weights are in "attention" too)
            plot_attention(
                [
                    (
                        self._source_steps(r["source"])[: len(r["attention"][0])],
                        r["tokens"] + (["<eos>"] if r["finished"] else []),
                        np.asarray(r["attention"]),
                    )
                    for r in shown
                ],
                run_dir / "attention.png",
            )
            log(f"plot: {run_dir / 'attention.png'}")
        return {"examples": examples}


def _dense(similarity: Any) -> np.ndarray:
    """A similarity block as a dense array (TF-IDF products are sparse matrices)."""
    from scipy.sparse import issparse

    return similarity.toarray() if issparse(similarity) else np.asarray(similarity)


SOS_ID, EOS_ID = 2, 3  # positions of <sos> and <eos> in the target symbols (after <pad>, <unk>)


def collate(examples: list[tuple[Any, list[int]]]) -> Batch:
    """Source ids (or number vectors) and target ids → a padded batch; an empty source (a text all
    cut away) is read as one padding step."""
    source, source_lengths = pad_inputs([s if len(s) else [0] for s, _ in examples])
    target_lengths = torch.tensor([len(t) + 1 for _, t in examples], dtype=torch.int64)
    target_in = torch.zeros(len(examples), int(target_lengths.max()), dtype=torch.int64)
    targets = torch.full_like(target_in, IGNORE)
    for row, (_, t) in enumerate(examples):
        target_in[row, : len(t) + 1] = torch.tensor([SOS_ID, *t], dtype=torch.int64)
        targets[row, : len(t) + 1] = torch.tensor([*t, EOS_ID], dtype=torch.int64)
    return Batch(source, source_lengths, target_in, target_lengths, targets)


@hookimpl
def register_tasks(register):
    register("seq2seq", Seq2SeqTask)
