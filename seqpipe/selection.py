"""When a validation split is too small to pick the best epoch by a classifier's metric.

Accuracy and macro-F1 move in steps of 1/n on n validation examples (per label, for macro-F1), so
on a few dozen of them the first epoch to reach a lucky value is kept however unsure its answers
still are (a perfect macro-F1 beside a validation loss of 0.52). The validation loss is continuous:
on such splits it picks the epoch. Metrics that are already continuous (RMSE, perplexity) or
counted over many tokens per example (tagging) are left to the task.
"""

from __future__ import annotations

from typing import Any

SMALL_SPLIT = 50  # validation examples under which a per-example metric is too coarse to pick an epoch
SMALL_LABEL = 5  # validation examples of one label under which its share of macro-F1 is too coarse


def too_small(task: Any, sizes: dict[str, int]) -> str | None:
    """Why ``task``'s validation split is too small to pick an epoch by its metric ("41 examples
    (under 50)"), or None. Asked only of tasks that predict one label per example, which say how
    many of each label the split holds (:meth:`seqpipe.contracts.Task.validation_label_counts`)."""
    counts = task.validation_label_counts()
    examples = sizes.get("validation")
    if counts is None or examples is None:
        return None
    if examples < SMALL_SPLIT:
        return f"{examples} examples (under {SMALL_SPLIT})"
    few = sorted((n, label) for label, n in counts.items() if n < SMALL_LABEL)
    if few:
        named = ", ".join(f"{label!r} {n}" for n, label in few[:3]) + (
            f" and {len(few) - 3} more" if len(few) > 3 else ""
        )
        return f"{examples} examples, {len(few)} label(s) with under {SMALL_LABEL} ({named})"
    return None
