"""report.html from real runs (classify, tag, forecast, seq2seq), opened in headless Chromium; and
the PNG plots' fixes, read from the figures the runs drew (not from pixels).

The browser checks need Chromium (`apt-get install chromium`) and Playwright for Python (`pip
install playwright`; its own browser download is never used). Without them they are skipped with
the reason, unless SEQPIPE_REQUIRE_BROWSER=1 (CI), where a missing browser fails them."""

from __future__ import annotations

import csv
import datetime
import json
import re
import shutil
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from seqpipe.cli import main

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO / "seqpipe" / "datasets"
# user text with markup in it: it must reach the page as text, never as markup
HOSTILE_COMMENT = '# </pre><script>alert("pipeline")</script><img src="https://example.com/x.png">'
HOSTILE_LABEL = 'ham <b>&</b> "eggs"'


# -- the runs ----------------------------------------------------------------------------------------
def _run(root: Path, pipeline: str, drawn: dict | None = None) -> Path:
    """``seqpipe run`` of ``pipeline`` into ``root/out``; with ``drawn``, each figure a plot
    function saves is kept there under its file name, before it is closed."""
    import seqpipe.plots

    path = root / "p.toml"
    path.write_text(HOSTILE_COMMENT + "\n" + textwrap.dedent(pipeline), encoding="utf-8")
    save = seqpipe.plots._save

    def keep_and_save(fig, where):
        drawn[Path(where).name] = _figure_data(fig)
        save(fig, where)

    with pytest.MonkeyPatch.context() as patch:
        if drawn is not None:
            patch.setattr(seqpipe.plots, "_save", keep_and_save)
        result = CliRunner().invoke(main, ["run", str(path), "--out", str(root / "out")])
    assert result.exit_code == 0, result.output
    assert f"report: {root / 'out' / 'report.html'}" in result.output, result.output  # written, not "could not write"
    return root / "out"


def _figure_data(fig) -> list[dict]:
    """What each axes of ``fig`` holds: title, lines (label, x, y), legend and axes boxes (pixels)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = []
    for ax in fig.axes:
        legend = ax.get_legend() or (fig.legends[0] if fig.legends else None)
        axes.append(
            {
                "title": ax.get_title(),
                "ylabel": ax.get_ylabel(),
                "xlabel": ax.get_xlabel(),
                "lines": [
                    {"label": line.get_label(), "x": list(line.get_xdata()), "y": list(line.get_ydata())}
                    for line in ax.get_lines()
                ],
                "texts": [t.get_text() for t in ax.texts],
                "xlim": ax.get_xlim(),
                "box": ax.get_tightbbox(renderer),  # with its tick labels and axis labels
                "legend_box": legend.get_window_extent(renderer) if legend is not None else None,
            }
        )
    return axes


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory):
    """200 spam/ham subjects, one label spelt with markup, 2 epochs picked by validation loss."""
    root = tmp_path_factory.mktemp("classify")
    rows = [json.loads(line) for line in (REPO / "tests" / "data" / "subjects-300.jsonl").read_text().splitlines()][
        :200
    ]
    with (root / "data.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(
            {"text": r["text"], "label": HOSTILE_LABEL if r["label"] == "ham" else r["label"]} for r in rows
        )
    drawn: dict = {}
    out = _run(
        root,
        """
        [data]
        path = "data.csv"
        [model]
        cell = "gru"
        hidden_size = 8
        [input]
        max_length = 40
        [task]
        name = "classify"
        [task.options]
        embedding_size = 8
        [training]
        epochs = 2
        batch_size = 32
        monitor = "loss"
        [export]
        exporter = "torchscript"  # the quicker exporter: these runs test the report, not the export
        parity_sequences = 20
    """,
        drawn,
    )
    return out, drawn


@pytest.fixture(scope="module")
def tag_run(tmp_path_factory):
    """150 Brown sentences, one epoch."""
    root = tmp_path_factory.mktemp("tag")
    sentences = (DATASETS / "brown_pos" / "brown-universal.conll").read_text(encoding="utf-8").split("\n\n")[:150]
    (root / "small.conll").write_text("\n\n".join(sentences) + "\n", encoding="utf-8")
    return _run(
        root,
        """
        [data]
        path = "small.conll"
        [model]
        cell = "gru"
        hidden_size = 8
        [task]
        name = "tag"
        [task.options]
        embedding_size = 8
        [training]
        epochs = 1
        batch_size = 32
        [export]
        exporter = "torchscript"  # the quicker exporter: these runs test the report, not the export
        parity_sequences = 20
    """,
    )


@pytest.fixture(scope="module")
def forecast_run(tmp_path_factory):
    """Seattle's daily wind, 300 days ordered by the date column; no ARIMA (seconds, not a minute)."""
    root = tmp_path_factory.mktemp("forecast")
    lines = (DATASETS / "seattle_weather" / "seattle-weather.csv").read_text(encoding="utf-8").splitlines()
    (root / "weather.csv").write_text("\n".join(lines[:301]) + "\n", encoding="utf-8")
    drawn: dict = {}
    out = _run(
        root,
        """
        [data]
        path = "weather.csv"
        validation_fraction = 0.15
        test_fraction = 0.2
        [model]
        cell = "gru"
        hidden_size = 8
        [task]
        name = "forecast"
        [task.options]
        target_columns = ["wind"]
        input_columns = ["temp_max"]
        time_column = "date"
        window = 7
        horizon = 2
        strong_baseline = false
        [training]
        epochs = 2
        batch_size = 32
        [export]
        exporter = "torchscript"  # the quicker exporter: these runs test the report, not the export
        parity_sequences = 20
    """,
        drawn,
    )
    return out, drawn


@pytest.fixture(scope="module")
def seq2seq_run(tmp_path_factory):
    """400 CMUdict words to phonemes with additive attention, one epoch."""
    root = tmp_path_factory.mktemp("seq2seq")
    lines = (DATASETS / "cmudict_g2p" / "cmudict-12k.tsv").read_text(encoding="utf-8").splitlines()
    (root / "small.tsv").write_text("\n".join(lines[:401]) + "\n", encoding="utf-8")
    return _run(
        root,
        """
        [data]
        path = "small.tsv"
        [model]
        cell = "gru"
        hidden_size = 16
        [input]
        column = "word"
        [output]
        column = "phonemes"
        [task]
        name = "seq2seq"
        [task.options]
        attention = "additive"
        embedding_size = 8
        heatmap_examples = 2
        [training]
        epochs = 1
        batch_size = 64
        [export]
        exporter = "torchscript"  # the quicker exporter: these runs test the report, not the export
        parity_sequences = 20
    """,
    )


# -- the page's content ------------------------------------------------------------------------------
def _page(run_dir: Path) -> tuple[str, dict]:
    return (run_dir / "report.html").read_text(encoding="utf-8"), json.loads((run_dir / "metrics.json").read_text())


def _section_ids(page: str) -> set[str]:
    return set(re.findall(r'<section id="([^"]+)">', page))


def _assert_common(page: str, metrics: dict) -> None:
    """What every run's report holds: self-contained, escaped, the test metrics, the baselines, the
    history, the data, parity and wall times."""
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page), "a resource outside the page"
    assert "<script" not in page and "<link" not in page
    assert (
        "&lt;/pre&gt;&lt;script&gt;alert(&quot;pipeline&quot;)&lt;/script&gt;" in page
    )  # the pipeline's comment, as text
    assert {"results", "training", "parity", "data", "times", "pipeline"} <= _section_ids(page)
    for name, value in metrics["test"].items():
        if isinstance(value, float) and 1e-3 <= abs(value) < 1e6:
            assert f"{value:.4f}" in page, name
    comparison = metrics["against_baselines"]
    assert f"{comparison['model']:.4f}" in page
    for name, value in comparison["baselines"].items():
        assert name in page and f"{value:.4f}" in page
    training = metrics["training"]
    for key in ("seconds", "evaluation_seconds", "run_seconds"):
        assert f"{training[key]:.2f} s" in page
    assert f"epoch <b>{training['best_epoch']}</b>" in page
    for split, count in metrics["data"]["examples"].items():
        assert re.search(rf"<td>{split}</td><td class=\"num\">{count}</td>", page)


def _with_parity(run_dir: Path) -> tuple[str, dict]:
    page, metrics = _page(run_dir)
    parity = json.loads((run_dir / "parity.json").read_text())
    for kind, graph in parity["graphs"].items():
        assert f"<td>{kind}</td><td>{graph['file']}</td>" in page
        assert f"{graph['max_abs_diff']:.2e}" in page
    return page, metrics


def test_classify_report_holds_per_label_figures_and_the_confusion_heat_map(classify_run):
    run_dir, _ = classify_run
    page, metrics = _with_parity(run_dir)
    _assert_common(page, metrics)
    assert "per-label" in _section_ids(page)
    escaped = "ham &lt;b&gt;&amp;&lt;/b&gt; &quot;eggs&quot;"
    assert HOSTILE_LABEL not in page and escaped in page
    confusion = metrics["confusion"]["test"]
    cells = re.findall(r'<table class="confusion">.*?</table>', page, flags=re.S)
    assert len(cells) == 1
    shown = [int(n) for n in re.findall(r">(\d+)</td>", cells[0])]
    assert shown == [n for row in confusion["counts"] for n in row]
    for figures in metrics["per_class"]["test"].values():
        assert f"{figures['f1']:.4f}" in page


def test_tag_report(tag_run):
    page, metrics = _with_parity(tag_run)
    _assert_common(page, metrics)
    assert f"{metrics['test']['accuracy']:.4f}" in page
    assert "per-label" in _section_ids(page)  # per tag: its figures and the confusion matrix of the test tokens
    counts = metrics["confusion"]["test"]["counts"]
    total, right = sum(map(sum, counts)), sum(counts[i][i] for i in range(len(counts)))
    assert total == metrics["test"]["tokens"] and abs(right / total - metrics["test"]["accuracy"]) < 1e-6
    assert sum(f["examples"] for f in metrics["per_class"]["test"].values()) == total


def test_forecast_report_shows_the_forecast_plot(forecast_run):
    run_dir, _ = forecast_run
    page, metrics = _with_parity(run_dir)
    _assert_common(page, metrics)
    assert "forecast" in _section_ids(page)
    assert page.count("data:image/png;base64,") == 2  # the training curves and the forecast


def test_seq2seq_report_shows_examples_and_attention(seq2seq_run):
    page, metrics = _with_parity(seq2seq_run)
    _assert_common(page, metrics)
    assert {"examples", "attention"} <= _section_ids(page)
    import html

    for example in metrics["examples"]:
        assert html.escape(example["source"]) in page and html.escape(example["reference"]) in page


def test_report_renders_again_from_the_run_directory(classify_run, tmp_path):
    """`python -m seqpipe.report RUN` (the CLI's `seqpipe report`) writes the same page again, also
    where training_curves.png was lost (drawn again from metrics.json's history)."""
    import subprocess
    import sys

    run_dir, _ = classify_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns(".lock"))
    (copy / "report.html").unlink()
    (copy / "training_curves.png").unlink()
    proc = subprocess.run([sys.executable, "-m", "seqpipe.report", str(copy)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(copy / "report.html")
    page = (copy / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 1 and "training" in _section_ids(page)
    (copy / "report.html").unlink()
    said = CliRunner().invoke(main, ["report", str(copy)])
    assert said.exit_code == 0 and said.output.strip() == f"report: {copy / 'report.html'}"
    assert (copy / "report.html").read_text(encoding="utf-8") == page
    refused = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert (
        refused.exit_code == 2 and len(refused.output.strip().splitlines()) == 1 and "no metrics.json" in refused.output
    )


def test_report_refuses_a_folder_without_results_and_a_damaged_metrics_file(classify_run, tmp_path):
    from seqpipe.errors import DamagedFileError, RunDirectoryError
    from seqpipe.report import write_report

    with pytest.raises(RunDirectoryError, match="no metrics.json"):
        write_report(tmp_path)
    run_dir, _ = classify_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns(".lock"))
    metrics = copy / "metrics.json"
    metrics.write_text(metrics.read_text() + " ")  # one byte more: not the file seqpipe wrote
    with pytest.raises(DamagedFileError, match="SHA-256"):
        write_report(copy)


def test_a_report_that_cannot_be_rendered_leaves_the_run_done(tmp_path, monkeypatch):
    """The report is a view: its failure is said in one line, the run is still done and servable."""
    import seqpipe.report
    from seqpipe.runstate import read_status

    def broken(run_dir):
        raise RuntimeError("no room for the page")

    monkeypatch.setattr(seqpipe.report, "write_report", broken)
    rows = [json.loads(line) for line in (REPO / "tests" / "data" / "subjects-300.jsonl").read_text().splitlines()][
        :120
    ]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    (tmp_path / "p.toml").write_text(
        textwrap.dedent("""
        [data]
        path = "data.jsonl"
        [model]
        hidden_size = 8
        [task.options]
        embedding_size = 8
        [training]
        epochs = 1
        [export]
        exporter = "torchscript"  # the quicker exporter: these runs test the report, not the export
        parity_sequences = 10
    """)
    )
    result = CliRunner().invoke(main, ["run", str(tmp_path / "p.toml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "report: could not write" in result.output and "no room for the page" in result.output
    assert f"render it again with: seqpipe report {tmp_path / 'out'}" in result.output
    assert read_status(tmp_path / "out")["state"] == "done" and not (tmp_path / "out" / "report.html").exists()


# -- the plots' fixes --------------------------------------------------------------------------------
def test_picked_by_loss_the_metric_panel_still_draws_the_tasks_metric_and_the_kept_epoch(classify_run):
    run_dir, drawn = classify_run
    loss_panel, metric_panel = drawn["training_curves.png"]
    history = json.loads((run_dir / "metrics.json").read_text())["training"]["history"]
    best = json.loads((run_dir / "metrics.json").read_text())["training"]["best_epoch"]
    curve = next(line for line in metric_panel["lines"] if line["label"] == "validation macro_f1")
    assert curve["y"] == pytest.approx([r["validation"]["macro_f1"] for r in history])
    assert metric_panel["title"] == "Validation macro_f1 (the epoch kept by loss)"
    for panel in (loss_panel, metric_panel):
        marks = [line for line in panel["lines"] if line["label"] == f"kept: epoch {best}"]
        assert marks and marks[0]["x"][0] == best
        assert any(
            line["x"] == [best] for line in panel["lines"] if line["label"].startswith("_")
        )  # the star on the point
        low, high = panel["xlim"]
        assert low < min(r["epoch"] for r in history) and high > max(
            r["epoch"] for r in history
        )  # the mark off the frame


def test_metric_panel_says_so_when_the_history_holds_only_the_loss():
    from seqpipe.plots import drawable_metric, training_curves_figure

    history = [
        {"epoch": e, "train_loss": 1.0 / e, "validation": {"loss": 1.5 / e, "examples": 10}, "best": True}
        for e in (1, 2)
    ]
    fig = training_curves_figure(history, "loss", monitor="loss")
    assert drawable_metric(history, "loss") is None
    assert [t.get_text() for t in fig.axes[1].texts] == ["no validation metric besides the loss"]
    history[0]["validation"]["accuracy"], history[1]["validation"]["accuracy"] = (
        None,
        0.5,
    )  # a metric missing from one epoch
    fig = training_curves_figure(history, "accuracy")
    assert [
        list(line.get_ydata()) for line in fig.axes[1].get_lines() if line.get_label() == "validation accuracy"
    ] == [[0.5]]


def test_forecast_plot_has_dates_on_its_axis_and_its_legend_below_the_data(forecast_run):
    _, drawn = forecast_run
    (panel,) = drawn["forecast.png"]
    actual = next(line for line in panel["lines"] if line["label"] == "actual")
    assert all(isinstance(t, datetime.datetime) for t in actual["x"]) and actual["x"][0].year == 2012
    assert panel["xlabel"] == "date"
    assert panel["legend_box"].y1 <= panel["box"].y0  # under the axes and their labels, covering none of them


# -- in the browser ----------------------------------------------------------------------------------
def _open(browser, report: Path) -> dict:
    """Load ``report`` and return what the page said and did: console messages, page errors, every
    request's URL, and counts of what rendered."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    console, errors, requests = [], [], []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    page.goto(report.as_uri(), wait_until="load")
    seen = page.evaluate("""() => ({
        sections: document.querySelectorAll('main section').length,
        tables: document.querySelectorAll('table').length,
        images: [...document.images].map(img => ({complete: img.complete, width: img.naturalWidth})),
        height: document.body.scrollHeight,
        title: document.title,
    })""")
    page.close()
    return {"console": console, "errors": errors, "requests": requests, **seen}


@pytest.mark.parametrize("run", ["classify_run", "tag_run", "forecast_run", "seq2seq_run"])
def test_report_opens_in_chromium_without_errors(run, request, browser):
    run_dir = request.getfixturevalue(run)
    run_dir = run_dir[0] if isinstance(run_dir, tuple) else run_dir
    seen = _open(browser, run_dir / "report.html")
    assert seen["console"] == [] and seen["errors"] == []
    assert all(url.startswith(("file:", "data:")) for url in seen["requests"]), seen["requests"]
    assert seen["sections"] == len(_section_ids((run_dir / "report.html").read_text(encoding="utf-8"))) >= 6
    assert seen["tables"] >= 4 and seen["height"] > 1500 and seen["title"].startswith("seqpipe run")
    images = seen["images"]
    assert images and all(img["complete"] and img["width"] > 0 for img in images)  # every PNG decoded
