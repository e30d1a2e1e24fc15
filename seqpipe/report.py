"""A run directory's results as one self-contained page, ``report.html``.

The page is a view of files the run already wrote (metrics.json, parity.json, config.json,
status.json, pipeline.toml and the PNG plots): it trains and evaluates nothing, so an existing run
can be rendered again at any time::

    python -m seqpipe.report RUN_DIR

Self-contained: the PNGs are embedded as base64 data URIs, the style sheet is inline, the page holds
no script, and its Content-Security-Policy forbids loading anything else, so it opens the same
offline, from an e-mail attachment or from a CI artifact. Every text that came from the user (the
pipeline, labels, samples, plugin names) is HTML-escaped. Standard library only (matplotlib only to
redraw training curves a run directory lacks): it runs where seqpipe serves, without torch.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqpipe import manifest
from seqpipe.errors import RunDirectoryError, SeqpipeError
from seqpipe.runstate import read_status

REPORT_FILE = "report.html"
# the run's own plots, in the section that shows each; any other PNG in the run directory (a plugin
# task's) goes under "More plots"
KNOWN_PLOTS = ("training_curves.png", "forecast.png", "attention.png")
# metrics.json's top-level keys the sections below render; any other (a plugin task's write_report)
# is shown as JSON under "More results", never dropped
RENDERED_KEYS = frozenset(
    {
        "train",
        "validation",
        "test",
        "data",
        "training",
        "against_baselines",
        "per_class",
        "confusion",
        "samples",
        "sampled_not_in_training",
        "examples",
    }
)
FIX = "run the pipeline again"


@dataclass
class RunFiles:
    """What the report reads from a run directory (None: the run did not write that file)."""

    run_dir: Path
    metrics: dict[str, Any]
    parity: dict[str, Any] | None
    config: dict[str, Any] | None
    status: dict[str, Any] | None
    pipeline_text: str | None
    plots: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG bytes


def write_report(run_dir: str | Path) -> Path:
    """Render ``run_dir``'s results into ``run_dir/report.html`` and return its path.

    Written under a temporary name and renamed into place, so a reader never opens half a page. Not
    recorded in manifest.json: seqpipe never reads the report back. Raises
    :class:`~seqpipe.errors.SeqpipeError` (one line) for a folder that is not a finished run's."""
    run_dir = Path(run_dir)
    page = render_report(read_run(run_dir))
    path = run_dir / REPORT_FILE

    def write(tmp: str) -> None:
        Path(tmp).write_text(page, encoding="utf-8")
        os.chmod(tmp, 0o644)  # a page to share and to serve: mkstemp's 0600 would hide it from a web server's user

    manifest.write_whole(path, write, recorded=False)
    return path


# -- reading ----------------------------------------------------------------------------------------
def read_run(run_dir: Path) -> RunFiles:
    """The run's files, each JSON file checked against manifest.json where the run has one (a damaged
    or hand-edited metrics.json is refused, as every seqpipe reader refuses it)."""
    if not run_dir.is_dir():
        raise RunDirectoryError(f"{run_dir}: not a directory; pass the run directory a `seqpipe run` wrote.")
    if not (run_dir / "metrics.json").is_file():
        raise RunDirectoryError(
            f"{run_dir}: no metrics.json, so the run was not evaluated (it stopped first, or this is not a "
            f"run directory); nothing to report; {FIX}."
        )
    plots = {p.name: p.read_bytes() for p in sorted(run_dir.glob("*.png"))}
    metrics = _read_json(run_dir / "metrics.json")
    if "training_curves.png" not in plots and metrics.get("training", {}).get("history"):
        plots["training_curves.png"] = _redrawn_training_curves(metrics)
    pipeline = run_dir / "pipeline.toml"
    return RunFiles(
        run_dir=run_dir,
        metrics=metrics,
        parity=_read_json(run_dir / "parity.json", optional=True),
        config=_read_json(run_dir / "config.json", optional=True),
        status=read_status(run_dir),
        pipeline_text=pipeline.read_text(encoding="utf-8", errors="replace") if pipeline.is_file() else None,
        plots=plots,
    )


def _read_json(path: Path, optional: bool = False) -> Any:
    if optional and not path.is_file():
        return None
    manifest.verify(path, fix=FIX)  # outside a run directory with a manifest (an older run): not checked
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirectoryError(f"{path}: unreadable ({type(exc).__name__}); {FIX}.") from None


def _redrawn_training_curves(metrics: dict[str, Any]) -> bytes:
    """training_curves.png drawn again from metrics.json's history (a run directory that lost it)."""
    import io

    from seqpipe.plots import plot_training_curves

    training = metrics["training"]
    buffer = io.BytesIO()
    plot_training_curves(training["history"], training.get("monitor", "loss"), buffer, monitor=training.get("monitor"))
    return buffer.getvalue()


# -- the page ---------------------------------------------------------------------------------------
def render_report(run: RunFiles) -> str:
    """The whole page: a header, then one section per part of the results the run holds."""
    sections = [(title, anchor, body) for title, anchor, render in SECTIONS if (body := render(run))]
    nav = "".join(f'<a href="#{anchor}">{_e(title)}</a>' for title, anchor, _ in sections)
    content = "\n".join(
        f'<section id="{anchor}"><h2>{_e(title)}</h2>\n{body}\n</section>' for title, anchor, body in sections
    )
    title = f"seqpipe run {run.run_dir.resolve().name}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{_e(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<header>
<h1>{_e(title)}</h1>
{_summary_line(run)}
<nav>{nav}</nav>
</header>
<main>
{content}
</main>
<footer>Written by seqpipe from the files of {_e(str(run.run_dir))}; render it again with
<code>seqpipe report {_e(str(run.run_dir))}</code>.</footer>
</body>
</html>
"""


def _summary_line(run: RunFiles) -> str:
    """Task, model and state in one line under the title."""
    config, status = run.config or {}, run.status or {}
    parts = []
    if config.get("task"):
        parts.append(f"task <b>{_e(config['task'].get('name'))}</b>")
    if config.get("model"):
        m = config["model"]
        parts.append(
            f"{_e(m.get('cell'))} cell, {_e(m.get('topology'))} topology, hidden size {_e(m.get('hidden_size'))}"
        )
    if status.get("state"):
        state = status["state"]
        parts.append(
            f'state <span class="{"good" if state == "done" else "bad"}">{_e(state)}</span>'
            + (f" ({_e(status['updated'])})" if status.get("updated") else "")
        )
    if run.parity is not None:
        parts.append("parity " + _verdict(run.parity.get("passed")))
    return f'<p class="summary">{" · ".join(parts)}</p>' if parts else ""


def _results(run: RunFiles) -> str:
    """The test metric beside every baseline the task fitted, then every metric of every split."""
    comparison = run.metrics.get("against_baselines")
    parts = []
    if comparison:
        parts.append(_baseline_table(comparison))
    splits = [s for s in ("train", "validation", "test") if isinstance(run.metrics.get(s), dict)]
    if splits:
        names = list(dict.fromkeys(k for s in splits for k in run.metrics[s]))
        rows = [[_e(name)] + [_value(run.metrics[s].get(name)) for s in splits] for name in names]
        parts.append("<h3>Metrics per split</h3>" + _table(["metric", *splits], rows, numeric_from=1))
    return "\n".join(parts)


def _baseline_table(comparison: dict[str, Any]) -> str:
    metric = comparison.get("metric", "")
    beats, trails, trivial = (set(comparison.get(k) or ()) for k in ("beats", "trails", "trivial"))
    rows = [["<b>this model</b>", f"<b>{_value(comparison.get('model'))}</b>", ""]]
    for name, value in (comparison.get("baselines") or {}).items():
        verdict = (
            '<span class="good">beaten</span>'
            if name in beats
            else '<span class="bad">ahead of the model</span>'
            if name in trails
            else "tied"
        )
        rows.append(
            [_e(name) + (' <span class="note">(trivial)</span>' if name in trivial else ""), _value(value), verdict]
        )
    return f"<h3>Test {_e(metric)} against the baselines</h3>" + _table(
        ["", f"test {metric}", "the model against it"], rows, numeric_from=1, numeric_to=2
    )


def _training(run: RunFiles) -> str:
    """The curves with the kept epoch marked, and the history table, the kept epoch's row marked."""
    training = run.metrics.get("training") or {}
    history = training.get("history") or []
    parts = []
    if training:
        epochs_run = training.get("epochs_run", len(history))
        parts.append(
            f"<p>{_e(epochs_run)} epoch{'' if epochs_run == 1 else 's'} run; the weights kept (evaluated and exported) "
            f"are epoch <b>{_e(training.get('best_epoch'))}</b>'s, picked by validation "
            f"<b>{_e(training.get('monitor'))}</b>"
            f" ({_e(training.get('monitor_mode'))}).</p>"
        )
    if "training_curves.png" in run.plots:
        parts.append(
            _image(
                run.plots["training_curves.png"],
                "Training and validation loss and the validation metric per "
                "epoch; the kept epoch marked by a dashed line and stars",
            )
        )
    if history:
        parts.append(_history_table(history, training.get("monitor"), training.get("best_epoch")))
    return "\n".join(parts)


def _history_table(history: list[dict], monitor: str | None, best_epoch: int | None) -> str:
    metrics = [
        m
        for m in dict.fromkeys(k for r in history for k in r.get("validation", {}))
        if m not in ("loss", "examples", "tokens")
    ][:4]  # the first few: the table stays readable
    if monitor and monitor != "loss" and monitor not in metrics:
        metrics = [monitor, *metrics[:3]]
    rows, marked = [], []
    for i, r in enumerate(history):
        v = r.get("validation", {})
        rows.append(
            [
                _e(r.get("epoch")),
                _value(r.get("train_loss")),
                _value(v.get("loss")),
                *(_value(v.get(m)) for m in metrics),
                _seconds(r.get("seconds")),
            ]
        )
        if r.get("epoch") == best_epoch:
            marked.append(i)
    headers = ["epoch", "train loss", "validation loss", *(f"validation {m}" for m in metrics), "seconds"]
    return (
        "<details><summary>Every epoch</summary>"
        + _table(headers, rows, numeric_from=0, marked_rows=marked)
        + "</details>"
    )


def _per_class(run: RunFiles) -> str:
    """Each label's precision, recall and F1 on the test split, and the confusion matrix as a heat map."""
    parts = []
    per_class = (run.metrics.get("per_class") or {}).get("test")
    if per_class:
        rows = [
            [_e(label)] + [_value(figures.get(k)) for k in ("precision", "recall", "f1", "examples", "predicted")]
            for label, figures in per_class.items()
        ]
        parts.append(
            '<h3>Per label (test)</h3><p class="note">— : no test examples of the label (recall), or none '
            "predicted either (precision, F1): left out of macro-F1, not counted as zero.</p>"
            + _table(["label", "precision", "recall", "F1", "test examples", "predicted"], rows, numeric_from=1)
        )
    confusion = (run.metrics.get("confusion") or {}).get("test")
    if confusion:
        parts.append(_confusion_heat_map(confusion["labels"], confusion["counts"]))
    return "\n".join(parts)


def _confusion_heat_map(labels: list[str], counts: list[list[int]]) -> str:
    """Rows true labels, columns predicted; each cell shaded by its share of its row (the true label's
    test examples), so a label the model misses stands out however rare it is."""
    head = "".join(f'<th scope="col">{_e(label)}</th>' for label in labels)
    body = []
    for label, row in zip(labels, counts):
        total = sum(row) or 1
        cells = []
        for j, count in enumerate(row):
            share = count / total
            colour = "42, 157, 143" if labels[j] == label else "231, 111, 81"  # right: green; wrong: red
            text = "#fff" if share > 0.55 else "#222"
            cells.append(
                f'<td style="background: rgba({colour}, {share:.3f}); color: {text}" '
                f'title="{_e(label)} predicted as {_e(labels[j])}: {count} ({share:.0%} of {_e(label)})">{count}</td>'
            )
        body.append(f'<tr><th scope="row">{_e(label)}</th>{"".join(cells)}</tr>')
    return (
        '<h3>Confusion matrix (test)</h3><p class="note">Rows: the true label; columns: the label predicted; shade: '
        "the "
        "share of the row's examples.</p>"
        f'<div class="scroll"><table class="confusion"><thead><tr><th>true \\ predicted</th>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _samples(run: RunFiles) -> str:
    """Generated texts per condition (greedy, beam, sampled), decoded from the exported graphs."""
    samples = run.metrics.get("samples")
    if not samples:
        return ""
    parts = []
    novel = run.metrics.get("sampled_not_in_training")
    if isinstance(novel, (int, float)):
        parts.append(f"<p>Sampled texts not in the training data: <b>{_value(novel)}</b> (share).</p>")
    for condition, decoded in samples.items():
        rows = [
            [_e(way), _e(", ".join(map(str, texts)) if isinstance(texts, list) else texts)]
            for way, texts in decoded.items()
        ]
        parts.append(f"<h3>Condition {_e(condition)}</h3>" + _table(["decoding", "texts"], rows))
    return "\n".join(parts)


def _examples(run: RunFiles) -> str:
    """Test sources with the decoded output and the reference (seq2seq), decoded from the exported graphs."""
    examples = run.metrics.get("examples")
    if not isinstance(examples, list) or not examples:
        return ""
    rows = [
        [
            _e(e.get("source")),
            _e(e.get("predicted")),
            _e(e.get("reference")),
            '<span class="good">yes</span>' if e.get("predicted") == e.get("reference") else "no",
        ]
        for e in examples
    ]
    return "<p>Decoded from the exported ONNX graphs.</p>" + _table(["source", "predicted", "reference", "exact"], rows)


def _attention(run: RunFiles) -> str:
    if "attention.png" not in run.plots:
        return ""
    return _image(
        run.plots["attention.png"],
        "Attention weights of the exported decoder: output tokens (rows) against source tokens (columns)",
    )


def _forecast(run: RunFiles) -> str:
    if "forecast.png" not in run.plots:
        return ""
    return _image(
        run.plots["forecast.png"],
        "Actual test values against one-step forecasts, persistence and an autoregressive multi-step forecast",
    )


def _more_plots(run: RunFiles) -> str:
    return "\n".join(_image(data, name) for name, data in run.plots.items() if name not in KNOWN_PLOTS)


def _parity(run: RunFiles) -> str:
    """Each exported graph against torch (or a precision copy against its fp32 original)."""
    parity = run.parity
    if not parity:
        return ""
    rows = []
    for kind, graph in (parity.get("graphs") or {}).items():
        lengths = _e(f"{graph.get('min_length', '?')}–{graph.get('max_length', '?')}") if "max_length" in graph else ""
        rows.append(
            [
                _e(kind),
                _e(graph.get("file", "")),
                _verdict(graph.get("passed")),
                _value(graph.get("max_abs_diff")),
                _value(graph.get("max_scaled_diff")),
                _value(graph.get("tolerance")),
                _value(graph.get("sequences")),
                lengths,
            ]
        )
    rules = sorted({str(g["rule"]) for g in (parity.get("graphs") or {}).values() if g.get("rule")})
    reason = parity.get("tolerance_reason")
    return (
        f"<p>All graphs: {_verdict(parity.get('passed'))}, largest difference {_value(parity.get('max_abs_diff'))} "
        f"(scaled {_value(parity.get('max_scaled_diff'))}).</p>"
        + "".join(f'<p class="note">Rule: {_e(rule)}</p>' for rule in rules)
        + (f'<p class="note">Tolerance chosen because: {_e(reason)}</p>' if reason else "")
        + _table(
            ["graph", "file", "parity", "max abs diff", "max scaled diff", "tolerance", "sequences", "lengths"],
            rows,
            numeric_from=3,
            numeric_to=7,
        )
    )


def _data(run: RunFiles) -> str:
    """Examples per split, and what the readers left out and why."""
    data = run.metrics.get("data")
    if not data:
        return ""
    examples = data.get("examples") or {}
    parts = [_table(["split", "examples"], [[_e(split), _value(n)] for split, n in examples.items()], numeric_from=1)]
    left_out = data.get("left_out") or {}
    if left_out:
        parts.append(
            "<h3>Left out</h3>"
            + _table(["why", "count"], [[_e(why), _value(n)] for why, n in left_out.items()], numeric_from=1)
        )
    else:
        parts.append("<p>Nothing was left out of the data.</p>")
    described = data.get("left_out_described") or []
    if described:
        parts.append("<ul>" + "".join(f"<li>{_e(line)}</li>" for line in described) + "</ul>")
    if run.config and (run.config.get("data") or {}).get("resolved_path"):
        parts.append(f'<p class="note">Read from {_e(run.config["data"]["resolved_path"])}</p>')
    return "\n".join(parts)


def _wall_times(run: RunFiles) -> str:
    training = run.metrics.get("training") or {}
    rows = [
        [label, f"{training[key]:.2f} s"]
        for key, label in (
            ("seconds", "training (the epochs' own time)"),
            ("evaluation_seconds", "evaluation"),
            ("run_seconds", "whole run, to the end of evaluation"),
        )
        if isinstance(training.get(key), (int, float))
    ]
    setup = [
        [label, _e(training[key])]
        for key, label in (("device", "device"), ("processes", "processes"), ("precision", "precision"))
        if key in training
    ]
    return _table(["", ""], rows + setup, numeric_from=1, head=False) if rows or setup else ""


def _pipeline(run: RunFiles) -> str:
    if run.pipeline_text is None:
        return ""
    return f"<p>pipeline.toml, as the run read it:</p><pre>{_e(run.pipeline_text)}</pre>"


def _more_results(run: RunFiles) -> str:
    """Results a plugin task added to metrics.json, shown as they are."""
    extra = {k: v for k, v in run.metrics.items() if k not in RENDERED_KEYS}
    examples = run.metrics.get("examples")
    if examples is not None and not isinstance(examples, list):  # "examples" is seq2seq's list; a plugin's may differ
        extra["examples"] = examples
    return f"<pre>{_e(json.dumps(extra, indent=2, ensure_ascii=False))}</pre>" if extra else ""


# (title, anchor, renderer): the page's sections in order; a renderer returns "" when the run has nothing for it
SECTIONS: list[tuple[str, str, Callable[[RunFiles], str]]] = [
    ("Test results", "results", _results),
    ("Training", "training", _training),
    ("Per label", "per-label", _per_class),
    ("Samples", "samples", _samples),
    ("Test examples", "examples", _examples),
    ("Attention", "attention", _attention),
    ("Forecast", "forecast", _forecast),
    ("More plots", "plots", _more_plots),
    ("Parity of the exported graphs", "parity", _parity),
    ("Data", "data", _data),
    ("Wall times", "times", _wall_times),
    ("Pipeline", "pipeline", _pipeline),
    ("More results", "more", _more_results),
]


# -- HTML pieces ------------------------------------------------------------------------------------
def _e(value: Any) -> str:
    """Any value as escaped HTML text (None as empty)."""
    return "" if value is None else html.escape(str(value), quote=True)


def format_number(value: float | int) -> str:
    """How the report writes a number: integers whole, metrics with 4 decimals, and tiny or huge
    figures (parity differences) in scientific notation."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if value == 0 or 1e-3 <= abs(value) < 1e6:
        return f"{value:.4f}"
    return f"{value:.2e}"


def _value(value: Any) -> str:
    """A metric's cell: a number formatted, None as a dash, anything else (a list, text) escaped."""
    if value is None:
        return '<span class="note">—</span>'
    if isinstance(value, (int, float)):
        return format_number(value)
    if isinstance(value, list):
        return _e(", ".join(map(str, value)))
    return _e(value)


def _seconds(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else _value(value)


def _verdict(passed: Any) -> str:
    return '<span class="good">passed</span>' if passed else '<span class="bad">failed</span>'


def _table(
    headers: Iterable[str],
    rows: list[list[str]],
    *,
    numeric_from: int | None = None,
    numeric_to: int | None = None,
    marked_rows: Iterable[int] = (),
    head: bool = True,
) -> str:
    """A table of already-escaped cells; columns ``numeric_from`` up to ``numeric_to`` right-aligned."""
    marked = set(marked_rows)

    def cell(i: int, text: str) -> str:
        numeric = numeric_from is not None and i >= numeric_from and (numeric_to is None or i < numeric_to)
        return f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>"

    thead = "<thead><tr>" + "".join(f'<th scope="col">{_e(h)}</th>' for h in headers) + "</tr></thead>" if head else ""
    body = "".join(
        f"<tr{' class=marked' if n in marked else ''}>" + "".join(cell(i, c) for i, c in enumerate(row)) + "</tr>"
        for n, row in enumerate(rows)
    )
    return f'<div class="scroll"><table>{thead}<tbody>{body}</tbody></table></div>'


def _image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}"><figcaption>{_e(alt)}</figcaption></figure>'
    )


STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 0; background:
#fafafa; }
header { background: #1f3a5f; color: #fff; padding: 16px 28px 10px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header .summary { margin: 4px 0 10px; }
header .good { color: #9be7c4; } header .bad { color: #ffb4a2; }
nav a { color: #cfe3ff; margin-right: 14px; text-decoration: none; font-size: 14px; white-space: nowrap; }
main { max-width: 1100px; margin: 0 auto; padding: 8px 28px 28px; }
section { background: #fff; border: 1px solid #e3e3e3; border-radius: 6px; padding: 4px 20px 16px; margin: 18px 0; }
h2 { font-size: 19px; border-bottom: 1px solid #eee; padding-bottom: 4px; }
h3 { font-size: 16px; margin: 18px 0 6px; }
table { border-collapse: collapse; margin: 6px 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 3px 9px; text-align: left; vertical-align: top; }
thead th { background: #f1f4f8; }
td.num { text-align: right; }
tr.marked td { background: #fff3cd; font-weight: 600; }
table.confusion td { text-align: right; min-width: 2.6em; }
.scroll { overflow-x: auto; }
figure { margin: 10px 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, .note { color: #666; font-size: 13px; }
.good { color: #1b7f4b; font-weight: 600; } .bad { color: #b3261e; font-weight: 600; }
pre { background: #f6f8fa; border: 1px solid #e3e3e3; padding: 10px; overflow-x: auto; font-size: 13px; }
details summary { cursor: pointer; color: #1f3a5f; margin: 8px 0; }
footer { max-width: 1100px; margin: 0 auto 30px; padding: 0 28px; color: #777; font-size: 13px; }
"""


def main(argv: list[str] | None = None) -> int:
    """``python -m seqpipe.report RUN_DIR``: render RUN_DIR/report.html again; prints its path."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(
            "usage: python -m seqpipe.report RUN_DIR   (writes RUN_DIR/report.html from the run's files)",
            file=sys.stderr,
        )
        return 2
    try:
        print(write_report(args[0]))
    except SeqpipeError as exc:
        print(f"seqpipe report: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
