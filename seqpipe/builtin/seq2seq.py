"""Encoder–decoder (many-to-many, unaligned): read a whole source sequence, then write a target one.

As in the seed, the encoder's final state initialises the decoder; with ``attention`` the decoder
also looks back at every encoder output at each step (Luong-style: after the decoder cell, its
output queries the encoder outputs, additive or dot-product scores, masked to each source's
length), which removes the seed's "information bottleneck" of a single state vector.

Exports: ``encoder.onnx`` (source ids, lengths → memory, state; native ONNX RNN operators) and
``decoder.onnx`` (one target step: token, state and — with attention — memory, memory lengths →
next-token probabilities, attention weights, new state).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torchmetrics.functional.text import word_error_rate

from seqpipe import hookimpl
from seqpipe.onnx.builder import GraphBuilder, finish_model, optional_state_inputs, state_value_infos
from seqpipe.onnx.native import emit_topology
from seqpipe.contracts import State, Task, Topology
from seqpipe.data import batched, read_records, text_values
from seqpipe.encoding import PAD, UNK, CharVocabulary
from seqpipe.errors import DataError
from seqpipe.onnx.spec import base_spec, state_io, states_spec, write_metadata
from seqpipe.onnx.torch_export import check_onnx, export_module
from seqpipe.initial_state import InitialState
from seqpipe.models import token_embedding
from seqpipe.onnx.parity import compare, outputs, report, three_way

IGNORE = -100
SOS, EOS = "<sos>", "<eos>"
MASKED = -1e9  # attention score of padded source positions: exp() underflows to exactly 0


class Seq2SeqOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_column: str = Field("source", description="column holding the source text (read as characters)")
    target_column: str = Field("target", description="column holding the target (space-separated tokens, e.g. phonemes)")
    attention: Literal["none", "additive", "dot"] = Field("additive", description="how the decoder looks back at the encoder outputs")
    embedding_size: int = Field(64, ge=1)
    max_source_length: int = Field(32, ge=1)
    max_target_length: int = Field(32, ge=1, description="also the decoding length limit")
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

    def forward(self, query: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "dot":
            scores = query @ memory.transpose(1, 2)  # [B, T, S]
        else:
            scores = self.score(torch.tanh(self.query(query).unsqueeze(2) + self.key(memory).unsqueeze(1))).squeeze(3)
        scores = scores.masked_fill(~mask.unsqueeze(1), MASKED)
        weights = torch.softmax(scores, dim=-1)
        return weights @ memory, weights


class Seq2SeqModel(nn.Module):
    """Source characters → encoder topology → (final state) → decoder topology (→ attention) → head."""

    def __init__(self, source_vocab: int, target_vocab: int, embedding_size: int, encoder: Topology, decoder: Topology,
                 attention: str, initial: InitialState, dropout: float = 0.0) -> None:
        super().__init__()
        self.initial = initial
        self.source_embed = token_embedding(source_vocab, embedding_size, dropout)
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

    def _read(self, out: torch.Tensor, memory: torch.Tensor, memory_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
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

    def decode_step(self, token: torch.Tensor, memory: torch.Tensor, memory_lengths: torch.Tensor,
                    state: State) -> tuple[torch.Tensor, torch.Tensor | None, State]:
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
        y, _, new = self.model.decode_step(x, torch.zeros(x.shape[0], 1, self.model.decoder.output_size), torch.ones_like(x), tuple(state))
        return (y, *new)


class Seq2SeqTask(Task):
    Options = Seq2SeqOptions
    monitor = "phoneme_error_rate"
    monitor_mode = "min"
    default_graphs = ()
    extra_graphs = ("encoder", "decoder")
    needs_causal = True  # the decoder steps; it is built like the encoder, so both must be causal
    needs_sequence_encoder = True  # encoder.onnx is built by emit_topology (native operators or cell loops)
    initial_states = ("zeros", "learnable")

    @property
    def predict_example(self) -> str:
        """Two test sources of this run's own data, quoted for the shell."""
        import shlex

        return " ".join(shlex.quote(s) for s, _ in self.pairs.get("test", [])[:2]) or '"some source text"'

    example_pipeline = {"data": {"dataset": "cmudict-g2p"}, "task": {"options": {"source_column": "word", "target_column": "phonemes"}}}

    def __init__(self, options: Seq2SeqOptions, data: Any) -> None:
        self.options = options
        self.data = data
        self.source_vocab: CharVocabulary | None = None
        self.target_symbols: list[str] = []
        self.examples: dict[str, list[tuple[list[int], list[int]]]] = {}
        self.pairs: dict[str, list[tuple[str, str]]] = {}
        self._nearest: dict[str, list[str]] = {}  # split -> the nearest-neighbour baseline's targets

    # -- data ---------------------------------------------------------------------------------
    def prepare(self) -> dict[str, int]:
        o, d = self.options, self.data.config
        train, validation, test = self.data.splits(self._read)
        pairs = train + validation + test
        self.data.account.add("truncated_sources", sum(len(src) > o.max_source_length for src, _ in pairs),
                              f"sources cut to task.options.max_source_length = {o.max_source_length} characters")
        self.data.account.add("truncated_targets", sum(len(tgt.split()) > o.max_target_length - 1 for _, tgt in pairs),
                              f"targets cut to task.options.max_target_length - 1 = {o.max_target_length - 1} symbols (one is <eos>)")
        train, validation, test = ([(src[: o.max_source_length], " ".join(tgt.split()[: o.max_target_length - 1])) for src, tgt in part]
                                   for part in (train, validation, test))
        self.source_vocab = CharVocabulary.fit((s for s, _ in train), lowercase=False, max_length=o.max_source_length, min_count=1)
        self.target_symbols = [PAD, UNK, SOS, EOS, *sorted({t for _, tgt in train for t in tgt.split()})]
        index = {t: i for i, t in enumerate(self.target_symbols)}
        for name, part in zip(self.splits, (train, validation, test)):
            self.pairs[name] = part
            self.examples[name] = [(self.source_vocab.encode(s), [index.get(t, 1) for t in tgt.split()]) for s, tgt in part]
        if not self.examples["test"]:
            raise DataError(f"{self.data.path}: too few rows for a test split; add data or raise data.test_fraction.")
        return {name: len(part) for name, part in self.examples.items()}

    def _read(self, path) -> list[tuple[str, str]]:
        o = self.options
        rows = read_records(path, self.data.format, [o.source_column, o.target_column], self.data.where)
        return list(zip(text_values(rows, o.source_column, path, "seq2seq"), text_values(rows, o.target_column, path, "seq2seq")))

    def batches(self, split: str, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None) -> Iterator[Batch]:
        return batched(self.examples[split], batch_size, collate, shuffle=shuffle, generator=generator)

    # -- model --------------------------------------------------------------------------------
    def build_model(self, make_topology: Callable[[int], Topology], initial_state: str = "zeros",
                    initial_state_scale: float = 0.1) -> Seq2SeqModel:
        o = self.options
        encoder, decoder = make_topology(o.embedding_size), make_topology(o.embedding_size)
        initial = InitialState(initial_state, encoder.state_shapes, initial_state_scale)
        return Seq2SeqModel(len(self.source_vocab), len(self.target_symbols), o.embedding_size, encoder, decoder, o.attention,
                            initial, o.dropout)

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
            predicted += [" ".join(self.target_symbols[i] for i in ids) for ids in self.greedy(model, batch)]
        reference = [t for _, t in self.pairs[split]]
        baseline = {f"baseline_{k}": v for k, v in self.scores(self._nearest_targets(split), reference).items()}
        return {"loss": total / count, **self.scores(predicted, reference), **baseline, "examples": len(predicted)}

    def _nearest_targets(self, split: str) -> list[str]:
        """The baseline: for each source, the target of the most similar training source (cosine
        similarity of character 1-3-gram TF-IDF vectors): what memorising the training pairs gives."""
        if split not in self._nearest:
            from sklearn.feature_extraction.text import TfidfVectorizer

            sources = [s for s, _ in self.pairs["train"]]
            vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), lowercase=False).fit(sources)
            train, queries = vectorizer.transform(sources), vectorizer.transform([s for s, _ in self.pairs[split]])
            nearest = np.concatenate([(queries[i: i + 1024] @ train.T).toarray().argmax(axis=1)
                                      for i in range(0, queries.shape[0], 1024)]) if queries.shape[0] else np.zeros(0, int)
            self._nearest[split] = [self.pairs["train"][j][1] for j in nearest]
        return self._nearest[split]

    @staticmethod
    def scores(predicted: list[str], reference: list[str]) -> dict[str, float]:
        """Phoneme error rate (edit distance over phonemes / reference phonemes, torchmetrics' word
        error rate on phoneme strings) and word accuracy (the whole pronunciation exactly right)."""
        return {"phoneme_error_rate": float(word_error_rate(predicted, reference)),
                "word_accuracy": float(np.mean([p == r for p, r in zip(predicted, reference)]))}

    # -- export -------------------------------------------------------------------------------
    def export_graph(self, kind: str, model: Seq2SeqModel, path: Path, *, resolved, opset: int, exporter: str,
                     tolerance: float, limit: int) -> tuple[dict[str, Any], dict[str, Any]]:
        model = model.eval().cpu()
        batch = collate(self.examples["test"][:limit])
        spec = base_spec(kind, resolved, model, self, opset=opset, exporter="")
        if kind == "encoder":
            onnx.save(self._encoder_graph(model, opset), str(path))
            check_onnx(path)
            spec.update(self._encoder_io(model), exporter="seqpipe native RNN/GRU/LSTM operators, or Loops over the exported cell")
            write_metadata(path, spec)
            return spec, self._encoder_parity(model, path, batch, tolerance)
        spec["exporter"] = self._export_decoder(model, path, opset, exporter)
        spec.update(self._decoder_io(model))
        write_metadata(path, spec)
        return spec, self._decoder_parity(model, path, batch, tolerance)

    def _encoder_graph(self, model: Seq2SeqModel, opset: int) -> onnx.ModelProto:
        g = GraphBuilder(opset=opset)
        lengths32 = g.op("Cast", ["lengths"], "lengths_i32", to=TensorProto.INT32)[0]
        embedded = g.op("Gather", [g.const("embedding", model.source_embed[0].weight.detach().numpy()), "x"], "embed")[0]
        time_major = g.op("Transpose", [embedded], "time_major", perm=[1, 0, 2])[0]
        initial = optional_state_inputs(g, model.initial.served_values(), "x")
        _, states, outputs = emit_topology(g, model.body, time_major, lengths32, initial)
        g.nodes.append(helper.make_node("Transpose", [outputs], ["memory"], perm=[1, 0, 2], name="memory"))  # [B, S, H]
        for name, state in zip(model.state_names, states):
            g.nodes.append(helper.make_node("Identity", [state], [f"state_out.{name}"], name=f"state_out_{name}"))
        graph = helper.make_graph(
            g.nodes, "seqpipe_seq2seq_encoder",
            [helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", "time"]),
             helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"]),
             *state_value_infos(model.state_shapes, "in", batch="state_batch")],
            [helper.make_tensor_value_info("memory", TensorProto.FLOAT, ["batch", "time", model.body.output_size]),
             *state_value_infos(model.state_shapes, "out")],
            initializer=g.initializers)
        return finish_model(g, graph, opset)

    def _export_decoder(self, model: Seq2SeqModel, path: Path, opset: int, exporter: str) -> str:
        b, s = torch.export.Dim("batch", min=1), torch.export.Dim("source_time", min=1)
        token = torch.full((2,), SOS_ID, dtype=torch.int64)
        state = model.initial(2)
        outputs = [f"state_out.{n}" for n in model.state_names]
        inputs_state = [f"state_in.{n}" for n in model.state_names]
        if model.attention is None:
            return export_module(PlainDecoderStep(model).eval(), (token, *state), path, input_names=["x", *inputs_state],
                                 output_names=["y", *outputs], dynamic_shapes=({0: b}, tuple({0: b} for _ in state)),
                                 opset=opset, exporter=exporter)
        memory, lengths = torch.randn(2, 5, model.body.output_size), torch.tensor([5, 3])
        return export_module(DecoderStep(model).eval(), (token, memory, lengths, *state), path,
                             input_names=["x", "memory", "memory_lengths", *inputs_state], output_names=["y", "attention", *outputs],
                             dynamic_shapes=({0: b}, {0: b, 1: s}, {0: b}, tuple({0: b} for _ in state)), opset=opset, exporter=exporter)

    def _encoder_io(self, model: Seq2SeqModel) -> dict[str, Any]:
        return {
            "inputs": [{"name": "x", "dtype": "int64", "shape": ["batch", "time"]}, {"name": "lengths", "dtype": "int64", "shape": ["batch"]},
                       *state_io(model, "in", optional=True)],
            "outputs": [{"name": "memory", "dtype": "float32", "shape": ["batch", "time", model.body.output_size],
                         "read": "feed to decoder.onnx as memory (zero past each length)"},
                        *state_io(model, "out", read="the decoder's first state_in")],
            "states": states_spec(model),
            "initial_state": model.initial.spec(),
        }

    def _decoder_io(self, model: Seq2SeqModel) -> dict[str, Any]:
        memory = [{"name": "memory", "dtype": "float32", "shape": ["batch", "source_time", model.body.output_size]},
                  {"name": "memory_lengths", "dtype": "int64", "shape": ["batch"]}] if model.attention else []
        return {
            "inputs": [{"name": "x", "dtype": "int64", "shape": ["batch"], "read": "the previous target token (<sos> first)"}, *memory,
                       *state_io(model, "in")],
            "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch", len(self.target_symbols)]}]
            + ([{"name": "attention", "dtype": "float32", "shape": ["batch", "source_time"]}] if model.attention else [])
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
        valid = (np.arange(memory.shape[1])[None, :] < batch.source_lengths.numpy()[:, None])
        worst: dict[str, dict[str, dict[str, float]]] = {}
        served, reference = outputs(memory, model.state_names, states), outputs(ref_memory, model.state_names, ref_state)
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
            feeds = {"x": token.numpy(), **{f"state_in.{n}": ort_state[n] for n in names}}
            if model.attention is not None:
                feeds.update(memory=memory.numpy(), memory_lengths=batch.source_lengths.numpy())
            out = runner.session.run(None, feeds)
            y_ort, w_ort, new_ort = out[0], (out[1] if model.attention is not None else None), out[-len(names):]
            alive = t < lengths
            torch_state = tuple(torch.where(torch.from_numpy(alive).view(-1, 1, 1), a, b) for a, b in zip(new, torch_state))
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
            "input": {"dtype": "int64", **self.source_vocab.to_spec()},
            "output": {"kind": "probabilities", "size": len(self.target_symbols), "labels": self.target_symbols,
                       "tokens": "space-separated", "sos_id": SOS_ID, "eos_id": EOS_ID,
                       "read": "decoder y: probabilities of the next target token; feed the chosen id as the next x; stop at <eos>"},
            "attention": self.options.attention,
            "decoding": {"max_length": self.options.max_target_length, "start": SOS, "end": EOS},
        }

    # -- report -------------------------------------------------------------------------------
    def write_report(self, model: Seq2SeqModel, run_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
        """Test examples transcribed from the exported graphs, and ``attention.png`` (with attention)."""
        from seqpipe.serving.predict import Transcriber

        transcriber = Transcriber(run_dir, device="cpu")
        words = [s for s, _ in self.pairs["test"][: max(self.options.heatmap_examples, 6)]]
        served = transcriber.transcribe(words)
        examples = [{"source": w, "predicted": r["text"], "reference": ref}
                    for w, r, (_, ref) in zip(words, served, self.pairs["test"])]
        for e in examples:
            log(f"example: {e['source']} -> {e['predicted']}   (reference: {e['reference']})")
        if model.attention is not None and self.options.heatmap_examples:
            from seqpipe.plots import plot_attention

            shown = served[: self.options.heatmap_examples]
            # rows: each emitted token, and the step that emitted <eos> (its weights are in "attention" too)
            plot_attention([(list(r["source"]), r["tokens"] + (["<eos>"] if r["finished"] else []), np.asarray(r["attention"]))
                            for r in shown], run_dir / "attention.png")
            log(f"plot: {run_dir / 'attention.png'}")
        return {"examples": examples}


SOS_ID, EOS_ID = 2, 3  # positions of <sos> and <eos> in the target symbols (after <pad>, <unk>)


def collate(examples: list[tuple[list[int], list[int]]]) -> Batch:
    source_lengths = torch.tensor([max(len(s), 1) for s, _ in examples], dtype=torch.int64)
    target_lengths = torch.tensor([len(t) + 1 for _, t in examples], dtype=torch.int64)
    source = torch.zeros(len(examples), int(source_lengths.max()), dtype=torch.int64)
    target_in = torch.zeros(len(examples), int(target_lengths.max()), dtype=torch.int64)
    targets = torch.full_like(target_in, IGNORE)
    for row, (s, t) in enumerate(examples):
        source[row, : len(s)] = torch.tensor(s, dtype=torch.int64)
        target_in[row, : len(t) + 1] = torch.tensor([SOS_ID, *t], dtype=torch.int64)
        targets[row, : len(t) + 1] = torch.tensor([*t, EOS_ID], dtype=torch.int64)
    return Batch(source, source_lengths, target_in, target_lengths, targets)


@hookimpl
def register_tasks(register):
    register("seq2seq", Seq2SeqTask)
