"""The strong classical baselines every classify and tag run reports beside the model's figures."""

from __future__ import annotations

import json
import random

import numpy as np
from click.testing import CliRunner

from seqpipe.baselines import against_baselines, describe_comparison, text_classifier, window_tagger
from seqpipe.cli import main


def test_the_text_baseline_learns_what_characters_decide():
    rng = random.Random(0)
    words = ["cheap", "meeting", "offer", "notes", "report", "lunch"]
    texts = [" ".join(rng.choice(words) for _ in range(4)) + (" $$$" if i % 2 else "") for i in range(300)]
    labels = [i % 2 for i in range(300)]

    def accuracy(truth, guess):
        return sum(t == g for t, g in zip(truth, guess)) / len(truth)

    predicted = text_classifier(
        texts[:200], labels[:200], texts[200:250], labels[200:250], texts[250:], accuracy, lowercase=False
    )
    assert predicted == labels[250:]


def test_the_window_baseline_uses_the_next_word():
    """The tag of 'can' depends on the word after it: a window model sees it (a causal tagger cannot)."""
    rng = random.Random(0)
    sentences, tags = [], []
    for _ in range(300):
        follower = rng.choice(["run", "opener"])
        sentences.append(["a", "can", follower])
        tags.append([0, 1 if follower == "run" else 2, 1 if follower == "run" else 2])

    def accuracy(truth, guess):
        return sum(t == g for t, g in zip(truth, guess)) / len(truth)

    predicted = window_tagger(sentences[:200], tags[:200], sentences[200:250], tags[200:250], sentences[250:], accuracy)
    assert predicted == tags[250:]


def test_runs_report_the_baseline_unless_switched_off(tmp_path, small_csv, write_pipeline):
    reported, said = {}, {}
    for switch in ("true", "false"):
        p = write_pipeline(tmp_path / f"{switch}.toml", small_csv)
        p.write_text(p.read_text().replace("embedding_size = 8", f"embedding_size = 8\nstrong_baseline = {switch}"))
        result = CliRunner().invoke(main, ["run", str(p), "--out", str(tmp_path / switch)])
        assert result.exit_code == 0, result.output
        reported[switch] = json.loads((tmp_path / switch / "metrics.json").read_text())
        said[switch] = [line for line in result.output.splitlines() if line.startswith("baselines: ")]
    test = reported["true"]["test"]
    assert 0.5 < test["tfidf_accuracy"] <= 1.0 and 0.0 < test["tfidf_macro_f1"] <= 1.0
    assert "tfidf_macro_f1" not in reported["false"]["test"] and "tfidf_macro_f1" not in reported["true"]["validation"]
    # the run says where the model stands against them (one epoch on 200 subjects: it trails TF-IDF)
    comparison = reported["true"]["against_baselines"]
    assert comparison["baselines"] == {"majority": test["majority_macro_f1"], "tfidf": test["tfidf_macro_f1"]}
    assert ("tfidf" in comparison["trails"]) == (test["macro_f1"] <= test["tfidf_macro_f1"])
    assert len(said["true"]) == 1 and f"test macro_f1 {test['macro_f1']:.4f}" in said["true"][0]
    assert ("does not beat " in said["true"][0]) == bool(comparison["trails"])
    assert all(f"{name} {value:.4f}" in said["true"][0] for name, value in comparison["baselines"].items())
    assert list(reported["false"]["against_baselines"]["baselines"]) == ["majority"]  # the trivial one stays
    assert reported["false"]["against_baselines"]["trivial"] == ["majority"]
    assert "every baseline" not in said["false"][0]  # clearing the floor alone is no claim of strength


def test_the_model_is_placed_against_each_baseline_in_the_metric_s_direction():
    test = {"macro_f1": 0.80, "majority_macro_f1": 0.40, "tfidf_macro_f1": 0.85, "tfidf_accuracy": 0.99, "loss": 0.1}
    assert against_baselines(test, "macro_f1", "max", ("majority",)) == {
        "metric": "macro_f1",
        "model": 0.80,
        "beats": ["majority"],
        "trails": ["tfidf"],
        "baselines": {"majority": 0.40, "tfidf": 0.85},
        "trivial": ["majority"],
    }
    assert "does not beat tfidf 0.8500 (it beats majority 0.4000)" in describe_comparison(
        against_baselines(test, "macro_f1", "max")
    )
    rmse = {
        "rmse": 18.5,
        "persistence_rmse": 33.3,
        "arima_rmse": 28.4,
        "rmse_3_step": 30.0,
        "persistence_rmse_3_step": 20.0,
    }
    assert against_baselines(rmse, "rmse", "min")["beats"] == [
        "persistence",
        "arima",
    ]  # lower is better; 3-step figures apart
    assert describe_comparison(against_baselines(rmse, "rmse", "min")).startswith(
        "baselines: test rmse 18.5000 beats every baseline"
    )
    assert against_baselines({"rmse": 1.0}, "rmse", "min") is None  # no baseline reported: nothing to say


def test_beating_only_a_trivial_baseline_is_not_called_beating_every_baseline():
    floor_only = against_baselines({"macro_f1": 0.8, "majority_macro_f1": 0.4}, "macro_f1", "max", ("majority",))
    said = describe_comparison(floor_only)
    assert "beats the trivial baseline(s) only (majority 0.4000)" in said and "every baseline" not in said
    # the same figures, with the floor not declared trivial, read as they always did
    assert "beats every baseline" in describe_comparison(
        against_baselines({"macro_f1": 0.8, "majority_macro_f1": 0.4}, "macro_f1", "max")
    )
    both = against_baselines(
        {"macro_f1": 0.9, "majority_macro_f1": 0.4, "tfidf_macro_f1": 0.85}, "macro_f1", "max", ("majority",)
    )
    assert describe_comparison(both).startswith(
        "baselines: test macro_f1 0.9000 beats every baseline (majority 0.4000, tfidf 0.8500)"
    )


def test_nearest_neighbour_classifies_by_shape_across_levels_scales_and_lengths():
    """Rising against falling ramps, each at a random level, scale and length: z-normalised and
    resampled to one length, the nearest training series has the same shape."""
    from seqpipe.baselines import nearest_neighbour

    rng = np.random.default_rng(1)

    def ramp(label: int) -> np.ndarray:
        steps = np.linspace(0.0, 1.0, int(rng.integers(10, 30)))
        shape = steps if label else 1.0 - steps**2
        return (rng.uniform(-50, 50) + rng.uniform(0.1, 20) * (shape + rng.normal(0, 0.05, len(steps))))[:, None]

    train_labels, test_labels = [i % 2 for i in range(20)], [i % 2 for i in range(40)]
    predicted = nearest_neighbour([ramp(y) for y in train_labels], train_labels, [ramp(y) for y in test_labels])
    assert predicted == test_labels


def test_arima_forecasts_an_autoregressive_series_near_its_noise():
    """On an AR(2) series the ARIMA baseline finds the order, its one-step error is close to the
    noise and below persistence's; multi-step forecasts come from the given origins."""
    import numpy as np

    from seqpipe.baselines import arima_forecasts

    rng = np.random.default_rng(0)
    x = np.zeros(400)
    for t in range(2, 400):
        x[t] = 1.2 * x[t - 1] - 0.5 * x[t - 2] + rng.normal()
    targets = np.arange(320, 400)
    one_step, multi, order = arima_forecasts(x.astype(np.float32), 300, targets, np.arange(320, 396), 5)
    rmse = float(np.sqrt(np.mean((one_step - x[targets]) ** 2)))
    persistence = float(np.sqrt(np.mean((x[targets - 1] - x[targets]) ** 2)))
    assert order == (2, 0, 0) and rmse < 1.1 and rmse < persistence, (rmse, persistence, order)  # the noise's std is 1
    assert multi.shape == (76, 5) and order[1] == 0


def test_arima_orders_whose_fit_did_not_converge_are_refitted_or_left_out():
    """Quarterly US real investment (statsmodels' macrodata): with statsmodels' default 50 iterations
    ARIMA(12, 1, 1) stopped unconverged, won on AIC, and forecast one quarter ahead at RMSE 219
    where persistence has 72.7; every order the baseline keeps must have converged."""
    import numpy as np
    import statsmodels.api as sm

    from seqpipe.baselines import arima_forecasts

    y = sm.datasets.macrodata.load_pandas().data["realinv"].to_numpy()
    targets = np.arange(162, 203)
    one_step, _, order = arima_forecasts(y, 142, targets, np.arange(161, 198), 5)
    rmse = float(np.sqrt(np.mean((one_step - y[targets]) ** 2)))
    persistence = float(np.sqrt(np.mean((y[targets - 1] - y[targets]) ** 2)))
    assert rmse < persistence, (rmse, persistence, order)
