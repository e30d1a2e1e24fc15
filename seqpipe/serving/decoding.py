"""Decoding token sequences from a step function: greedy, seeded sampling, beam search.

Torch-free (numpy only), so the same code decodes from onnxruntime sessions in an application and
from torch models in tests. A step function maps ``(tokens [N], state) -> (probabilities [N, V],
state)``, where ``state`` is a dict of arrays whose first axis is N; anything else a decoder needs
(an encoder's memory, say) lives in the step function's closure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from seqpipe.predictor import Option

# the command-line options of every task that decodes with these (generate, seq2seq)
BEAM = Option("beam", int, 1, "beam width (> 1: beam search)")
MAX_LENGTH = Option("max_length", int, None, "most symbols to emit (default: from the model)")

State = dict[str, np.ndarray]
StepFunction = Callable[[np.ndarray, State], tuple[np.ndarray, State]]


@dataclass(frozen=True)
class Hypothesis:
    tokens: list[int]  # emitted tokens, without <sos> and <eos>
    log_probability: float
    finished: bool  # ended with <eos> (False: stopped at the length limit)


def _take(state: State, rows: np.ndarray) -> State:
    return {k: v[rows] for k, v in state.items()}


def sample(
    step: StepFunction,
    state: State,
    *,
    sos: int,
    eos: int,
    max_length: int,
    temperature: float = 0.0,
    rng: np.random.Generator | None = None,
) -> list[Hypothesis]:
    """One sequence per row of ``state``: greedy when ``temperature`` is 0, else sampled from
    probabilities sharpened or flattened by ``temperature`` (seed ``rng`` for repeatable draws)."""
    n = next(iter(state.values())).shape[0]
    draws = rng if rng is not None else np.random.default_rng(0)
    tokens = np.full(n, sos, dtype=np.int64)
    out: list[list[int]] = [[] for _ in range(n)]
    logp = np.zeros(n)
    done = np.zeros(n, dtype=bool)
    for _ in range(max_length):
        probs, state = step(tokens, state)
        probs = np.asarray(probs, dtype=np.float64)
        if temperature > 0:
            weights = np.exp(np.log(np.maximum(probs, 1e-30)) / temperature)
            weights /= weights.sum(axis=1, keepdims=True)
            chosen = np.array([draws.choice(len(w), p=w) for w in weights])
        else:
            chosen = probs.argmax(axis=1)
        for row in np.flatnonzero(~done):
            logp[row] += np.log(max(probs[row, chosen[row]], 1e-30))
            if chosen[row] == eos:
                done[row] = True
            else:
                out[row].append(int(chosen[row]))
        if done.all():
            break
        tokens = chosen.astype(np.int64)
    return [Hypothesis(t, float(lp), bool(d)) for t, lp, d in zip(out, logp, done)]


def beam_search(
    step: StepFunction, state: State, *, sos: int, eos: int, max_length: int, beam: int
) -> list[Hypothesis]:
    """The ``beam`` most probable sequences from one starting state (``state`` rows: 1), best first.

    Scores are summed log-probabilities; finished hypotheses compete with unfinished ones at
    equal footing per step, so a short certain sequence is not beaten by a long one by length alone.
    """
    if next(iter(state.values())).shape[0] != 1:
        raise ValueError("beam_search decodes one sequence at a time: pass a state with one row")
    live = [Hypothesis([], 0.0, False)]
    finished: list[Hypothesis] = []
    tokens = np.array([sos], dtype=np.int64)
    for _ in range(max_length):
        probs, new_state = step(tokens, state)
        logp = np.log(np.maximum(np.asarray(probs, dtype=np.float64), 1e-30))  # [live, V]
        scores = np.array([h.log_probability for h in live])[:, None] + logp
        order = np.argsort(-scores, axis=None)[: 2 * beam]
        candidates = []
        for flat in order:
            row, token = divmod(int(flat), logp.shape[1])
            h = live[row]
            if token == eos:
                finished.append(Hypothesis(h.tokens, float(scores[row, token]), True))
            else:
                candidates.append((row, Hypothesis(h.tokens + [token], float(scores[row, token]), False)))
            if len(candidates) == beam:
                break
        finished.sort(key=lambda h: -h.log_probability)
        finished = finished[:beam]
        # stop once no live hypothesis can beat the worst kept finished one (log-probabilities only fall)
        if not candidates or (
            len(finished) == beam and candidates[0][1].log_probability <= finished[-1].log_probability
        ):
            break
        rows = np.array([row for row, _ in candidates])
        live = [h for _, h in candidates]
        state = _take(new_state, rows)
        tokens = np.array([h.tokens[-1] for h in live], dtype=np.int64)
    best = sorted(finished + ([] if len(finished) >= beam else live), key=lambda h: -h.log_probability)
    return best[:beam]
