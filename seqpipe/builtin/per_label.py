"""Each label's test figures and the confusion matrix, for tasks that predict one label per
example (classify) or per step (tag): an average can hide a label that is never predicted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

CONFUSION_LABELS = 200  # the most labels whose test confusion matrix metrics.json holds


def per_label_report(
    truth: np.ndarray, guess: np.ndarray, labels: list[str], what: str, remedy: str, log: Callable[[str], None]
) -> dict[str, Any]:
    """``{"per_class": {"test": …}, "confusion": {"test": …}}`` from true and predicted label ids:
    each label's precision, recall, F1, examples and predictions, and (up to
    :data:`CONFUSION_LABELS` labels) the confusion matrix, rows true labels, columns predicted;
    the run log gets the weakest labels, those never predicted right (with ``remedy``) and those
    the test split lacks. ``what``: "label" or "tag", as the log names them."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(truth, guess, labels=ids, zero_division=0)
    predicted = np.bincount(guess, minlength=len(ids))
    # a label with no test examples has no recall, and no F1 unless it was predicted (wrongly): left
    # out as macro-F1 leaves it out (torchmetrics), never counted as a zero
    per_class = {
        label: {
            "precision": float(precision[i]) if support[i] or predicted[i] else None,
            "recall": float(recall[i]) if support[i] else None,
            "f1": float(f1[i]) if support[i] or predicted[i] else None,
            "examples": int(support[i]),
            "predicted": int(predicted[i]),
        }
        for i, label in enumerate(labels)
    }
    for line in describe_per_class(per_class, remedy, what):
        log(line)
    report: dict[str, Any] = {"per_class": {"test": per_class}}
    if len(ids) <= CONFUSION_LABELS:  # beyond, a dense matrix would outweigh the rest of metrics.json
        report["confusion"] = {
            "test": {"labels": labels, "counts": confusion_matrix(truth, guess, labels=ids).tolist()}
        }
    return report


def describe_per_class(
    per_class: dict[str, dict[str, Any]], remedy: str, what: str = "label", shown: int = 8
) -> list[str]:
    """Run-log lines for :func:`per_label_report`: each label's test F1 (the ``shown`` weakest where
    there are more), the labels whose test examples are never predicted right (with ``remedy``),
    and those the test split has no example of."""
    scored = sorted(
        (label for label in per_class if per_class[label]["f1"] is not None), key=lambda label: per_class[label]["f1"]
    )
    listed = scored[:shown]
    line = f"test per {what}: " + ", ".join(
        f"{label} F1 {per_class[label]['f1']:.4f} (precision {per_class[label]['precision']:.4f}, "
        + (f"recall {per_class[label]['recall']:.4f}, " if per_class[label]["recall"] is not None else "")
        + f"{per_class[label]['examples']} examples)"
        for label in listed
    )
    lines = [
        line
        + (f"; the {len(scored) - len(listed)} others in metrics.json (per_class)" if len(scored) > len(listed) else "")
    ]
    missed = [label for label in scored if per_class[label]["recall"] == 0.0]
    if missed:
        lines.append(f"test: {what}(s) {', '.join(map(repr, missed))} never predicted right (recall 0); {remedy}")
    absent = [label for label, figures in per_class.items() if not figures["examples"]]
    if absent:
        lines.append(
            f"test: no example of {what}(s) {', '.join(map(repr, absent))} in the test split; their figures are left "
            "out of macro_f1 unless predicted"
        )
    return lines
