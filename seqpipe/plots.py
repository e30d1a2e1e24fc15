"""Training curves as a PNG (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402


def plot_training_curves(history: list[dict], metric: str, path: Path) -> None:
    """Train and validation loss, and the validation ``metric`` (the monitor, or the task's own when
    the epoch is picked by loss), per epoch; the kept (best) epoch marked on both panels."""
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], marker="o", label="train")
    ax_loss.plot(epochs, [r["validation"]["loss"] for r in history], marker="o", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    values = [r["validation"].get(metric) for r in history]
    if metric != "loss" and all(isinstance(v, (int, float)) for v in values):
        ax_metric.plot(epochs, values, marker="o", color="tab:green", label=f"validation {metric}")
    kept = [r["epoch"] for r in history if r.get("best")]
    for ax in (ax_loss, ax_metric):
        if kept:  # the last epoch that improved is the one restored, evaluated and exported
            ax.axvline(kept[-1], color="tab:red", linestyle="--", linewidth=1, label=f"kept: epoch {kept[-1]}")
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    ax_metric.set(xlabel="epoch", ylabel=metric, title=f"Validation {metric}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_forecast(times, actual, one_step, persistence, multi_times, multi_step, path: Path, *, target: str = "value",
                  time_label: str | None = None) -> None:
    """Actual values against one-step forecasts, persistence, and one autoregressive multi-step run;
    the legend says the horizon drawn, the x-axis the time column (or the row of the series)."""
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(times, actual, color="black", marker=".", label="actual")
    ax.plot(times, one_step, color="tab:blue", label="one step ahead")
    ax.plot(times, persistence, color="tab:gray", linestyle=":", label="persistence (previous value)")
    ax.plot(multi_times, multi_step, color="tab:red", linestyle="--", marker="x",
            label=f"{len(multi_step)} steps ahead from the first test row, autoregressive")
    ax.set(xlabel=time_label or "time step (row of the series)", ylabel=target, title=f"Forecast of {target} on the test part")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_attention(examples: list[tuple[list[str], list[str], "object"]], path: Path) -> None:
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
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _drawable(tokens: list[str]) -> bool:
    """Whether matplotlib's default font has a glyph for every character of ``tokens``."""
    from matplotlib.font_manager import FontProperties, findfont
    from matplotlib.ft2font import FT2Font

    font = FT2Font(findfont(FontProperties()))
    return all(font.get_char_index(ord(ch)) != 0 for token in tokens for ch in str(token))
