"""The run's PNG plots (matplotlib, headless): training curves, the forecast, attention weights.

Each plot is built by a ``*_figure`` function that returns the matplotlib figure (tests inspect its
axes, the report can redraw into memory) and saved by a ``plot_*`` function that closes it."""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import IO, Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

# validation figures that count things rather than score the model: never the metric drawn
NOT_METRICS = frozenset({"loss", "examples", "tokens"})
LEGEND_ROOM = 0.12  # the share of the forecast figure's height below the axes, for its legend
BEST_STYLE = {"color": "tab:red", "linestyle": "--", "linewidth": 1.2}


def plot_training_curves(
    history: list[dict], metric: str, path: Path | IO[bytes], *, monitor: str | None = None
) -> None:
    """Save :func:`training_curves_figure` as a PNG."""
    _save(training_curves_figure(history, metric, monitor=monitor), path)


def training_curves_figure(history: list[dict], metric: str, *, monitor: str | None = None) -> Figure:
    """Train and validation loss, and a validation metric, per epoch; the kept (best) epoch marked
    on both panels with a line and a star on its points.

    ``metric``: the metric to draw beside the loss (the monitor, or the task's own when the epoch is
    picked by loss); when the history holds no number for it (a plugin task monitoring its loss, a
    metric missing from some epochs' records), the first validation metric that has numbers is drawn
    instead, so the panel is never left empty without a word. ``monitor``: what picked the epoch,
    named in the titles."""
    epochs = [r["epoch"] for r in history]
    best = kept_epoch(history)
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], marker="o", label="train")
    _plot_numbers(ax_loss, history, "loss", best, color="tab:orange", label="validation")
    ax_loss.set(
        xlabel="epoch",
        ylabel="loss",
        title="Loss" + (" (the epoch kept: lowest validation loss)" if monitor == "loss" else ""),
    )
    drawn = drawable_metric(history, metric)
    if drawn is None:
        ax_metric.text(
            0.5, 0.5, "no validation metric besides the loss", ha="center", va="center", transform=ax_metric.transAxes
        )
        ax_metric.set(xlabel="epoch", title="Validation metric", yticks=[])
    else:
        _plot_numbers(ax_metric, history, drawn, best, color="tab:green", label=f"validation {drawn}")
        picked_by = "" if monitor in (None, drawn) else f" (the epoch kept by {monitor})"
        ax_metric.set(xlabel="epoch", ylabel=drawn, title=f"Validation {drawn}{picked_by}")
    for ax in (ax_loss, ax_metric):
        ax.margins(y=0.12)  # room above and below for the kept point's value
        if best is not None:
            ax.axvline(best, **BEST_STYLE, label=f"kept: epoch {best}")
        _epoch_axis(ax, epochs)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(loc="best")
    fig.tight_layout()
    return fig


def kept_epoch(history: list[dict]) -> int | None:
    """The epoch whose weights the run kept: the last that improved (restored, evaluated, exported)."""
    improved = [r["epoch"] for r in history if r.get("best")]
    return improved[-1] if improved else None


def drawable_metric(history: list[dict], metric: str) -> str | None:
    """``metric`` if some epoch's validation record holds a number for it, else the first validation
    metric that does (None: the records hold nothing but the loss and counts)."""

    def has_numbers(name: str) -> bool:
        return any(_number(r["validation"].get(name)) is not None for r in history)

    if metric not in NOT_METRICS and has_numbers(metric):
        return metric
    names = [name for r in history for name in r["validation"] if name not in NOT_METRICS]
    return next((name for name in dict.fromkeys(names) if has_numbers(name)), None)


def _plot_numbers(ax, history: list[dict], name: str, best: int | None, *, color: str, label: str) -> None:
    """The validation ``name`` per epoch (epochs without a number for it left out, not drawn as zero),
    with a star on the kept epoch."""
    points = [(r["epoch"], _number(r["validation"].get(name))) for r in history]
    points = [(epoch, value) for epoch, value in points if value is not None]
    ax.plot([e for e, _ in points], [v for _, v in points], marker="o", color=color, label=label)
    kept = [v for e, v in points if e == best]
    if kept:
        ax.plot([best], kept, marker="*", markersize=16, color=BEST_STYLE["color"], linestyle="none", zorder=5)
        ax.annotate(
            f"{kept[0]:.4g}", (best, kept[0]), textcoords="offset points", xytext=(6, 8), color=BEST_STYLE["color"]
        )


def _number(value: Any) -> float | None:
    return (
        float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else None
    )


def _epoch_axis(ax, epochs: list[int]) -> None:
    """Whole epochs only, with half an epoch of room each side, so a line marking the first or last
    epoch is not hidden under the axes' frame."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # one epoch: tick 1, not 0.5, 0.6, …
    if epochs:
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)


def plot_forecast(
    times,
    actual,
    one_step,
    persistence,
    multi_times,
    multi_step,
    path: Path | IO[bytes],
    *,
    target: str = "value",
    time_label: str | None = None,
) -> None:
    """Save :func:`forecast_figure` as a PNG."""
    _save(
        forecast_figure(
            times, actual, one_step, persistence, multi_times, multi_step, target=target, time_label=time_label
        ),
        path,
    )


def forecast_figure(
    times,
    actual,
    one_step,
    persistence,
    multi_times,
    multi_step,
    *,
    target: str = "value",
    time_label: str | None = None,
) -> Figure:
    """Actual values against one-step forecasts, persistence, and one autoregressive multi-step run.

    ``times``: the time column's values (dates, or numbers such as years) when the pipeline names
    one, else row numbers, which ``time_label`` None says on the axis. The legend sits below the
    axes and their labels: inside, wherever it went, it hid part of a series that fills the whole width."""
    fig, ax = plt.subplots(figsize=(10, 4.6))
    ax.plot(times, actual, color="black", marker=".", label="actual")
    ax.plot(times, one_step, color="tab:blue", label="one step ahead")
    ax.plot(times, persistence, color="tab:gray", linestyle=":", label="persistence (previous value)")
    ax.plot(
        multi_times,
        multi_step,
        color="tab:red",
        linestyle="--",
        marker="x",
        label=f"{len(multi_step)} steps ahead from the first test row, autoregressive",
    )
    ax.set(
        xlabel=time_label or "time step (row of the series)",
        ylabel=target,
        title=f"Forecast of {target} on the test part",
    )
    if _whole_numbers(times):  # years as 1950, not 1950.0 or 1.95e3
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.ticklabel_format(axis="x", useOffset=False)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, LEGEND_ROOM, 1, 1))  # the axes, tick labels and axis label above the legend's two rows
    return fig


def _whole_numbers(values) -> bool:
    return all(isinstance(v, numbers.Real) and float(v).is_integer() for v in values)


def _save(fig: Figure, path: Path | IO[bytes]) -> None:
    try:
        fig.savefig(path, dpi=100, format="png")
    finally:
        plt.close(fig)  # pyplot keeps every open figure: a long tuning study would pile them up


def plot_attention(examples: list[tuple[list[str], list[str], Any]], path: Path) -> None:
    """One heatmap per example: output tokens (rows) against source tokens (columns), attention weights."""
    fig, axes = plt.subplots(1, len(examples), figsize=(3.2 * len(examples), 3.6), squeeze=False)
    for ax, (source, output, weights) in zip(axes[0], examples):
        ax.imshow(weights[: len(output), : len(source)], cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        # tokens the plot's font cannot draw (Thai, say) would be empty boxes: number the steps instead
        drawable = _drawable(source)
        ax.set_xticks(range(len(source)), source if drawable else [str(i + 1) for i in range(len(source))])
        ax.set_yticks(range(len(output)), output if _drawable(output) else [str(i + 1) for i in range(len(output))])
        ax.set_xlabel("source" if drawable else "source step (script not in the plot's font)")
        ax.tick_params(labelsize=8)
    axes[0][0].set_ylabel("output (decoded)")
    fig.suptitle("Attention weights of the exported decoder")
    fig.tight_layout()
    _save(fig, path)


def _drawable(tokens: list[str]) -> bool:
    """Whether matplotlib's default font has a glyph for every character of ``tokens``."""
    from matplotlib.font_manager import FontProperties, findfont
    from matplotlib.ft2font import FT2Font

    font = FT2Font(findfont(FontProperties()))
    return all(font.get_char_index(ord(ch)) != 0 for token in tokens for ch in str(token))
