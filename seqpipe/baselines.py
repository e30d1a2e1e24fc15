"""Strong classical baselines, computed with scikit-learn on the same splits as the model.

What a user would build in seconds before trusting a recurrent model: character n-gram TF-IDF
with logistic regression for texts, 1-nearest-neighbour on z-normalised series and logistic
regression on per-feature summaries for number sequences, logistic regression on word-window features for tags, an
ARIMA model (statsmodels; differenced when a KPSS test finds a trend) for a series. The text classifier picks its
regularisation on the
validation split (as the model picks its epoch); the tagger, whose fit takes about 20 s on 5,000
sentences, uses one (C = 10); ARIMA picks its order by AIC on the training part. All predict the
test split and never touch the exported model.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

REGULARISATION = (1.0, 10.0, 100.0)  # logistic regression's C, chosen on validation (text)
TAGGER_REGULARISATION = (10.0,)


def text_classifier(
    train: Sequence[str],
    train_labels: Sequence[int],
    validation: Sequence[str],
    validation_labels: Sequence[int],
    test: Sequence[str],
    score: Callable[[Sequence[int], Sequence[int]], float],
    lowercase: bool,
) -> list[int]:
    """Character 1-5-gram TF-IDF (within word boundaries, sublinear counts) + logistic regression:
    the test split's predicted labels."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(
        analyzer="char_wb", ngram_range=(1, 5), sublinear_tf=True, lowercase=lowercase, min_df=2
    )
    features = vectorizer.fit_transform(train)
    return _logistic(
        features, train_labels, vectorizer.transform(validation), validation_labels, vectorizer.transform(test), score
    )


def summary_classifier(
    train: Sequence[np.ndarray],
    train_labels: Sequence[int],
    validation: Sequence[np.ndarray],
    validation_labels: Sequence[int],
    test: Sequence[np.ndarray],
    score: Callable[[Sequence[int], Sequence[int]], float],
) -> list[int]:
    """Logistic regression on each feature's mean, standard deviation, minimum, maximum, first and
    last value (standardised), and the sequence's length: the test split's predicted labels."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(sequence_summaries(train))
    features = lambda values: scaler.transform(sequence_summaries(values))  # noqa: E731
    return _logistic(features(train), train_labels, features(validation), validation_labels, features(test), score)


def nearest_neighbour(
    train: Sequence[np.ndarray], train_labels: Sequence[int], test: Sequence[np.ndarray]
) -> list[int]:
    """1-nearest-neighbour by Euclidean distance between z-normalised series (each feature of each
    sequence rescaled over its own steps, then all steps resampled to the training split's median
    length): the UCR archive's reference classifier. The test split's predicted labels."""
    from sklearn.neighbors import KNeighborsClassifier

    from seqpipe.inputs import z_normalised

    length = int(np.median([len(v) for v in train]))
    flat = lambda values: np.stack([_resampled(z_normalised(v), length).ravel() for v in values])  # noqa: E731
    return (
        KNeighborsClassifier(n_neighbors=1, algorithm="brute")
        .fit(flat(train), list(train_labels))
        .predict(flat(test))
        .tolist()
    )


def _resampled(value: np.ndarray, length: int) -> np.ndarray:
    """``value`` [time, features] linearly interpolated to ``length`` steps (unchanged when it has them)."""
    if len(value) == length:
        return value
    at, grid = np.linspace(0.0, 1.0, len(value)) if len(value) > 1 else np.zeros(1), np.linspace(0.0, 1.0, length)
    return np.stack([np.interp(grid, at, value[:, f]) for f in range(value.shape[1])], axis=1)


def sequence_summaries(values: Sequence[np.ndarray]) -> np.ndarray:
    """Per sequence: each feature's mean, std, minimum, maximum, first and last value, and the length."""
    return np.stack([np.concatenate([v.mean(0), v.std(0), v.min(0), v.max(0), v[0], v[-1], [len(v)]]) for v in values])


def window_tagger(
    train: Sequence[Sequence[str]],
    train_tags: Sequence[Sequence[int]],
    validation: Sequence[Sequence[str]],
    validation_tags: Sequence[Sequence[int]],
    test: Sequence[Sequence[str]],
    score: Callable[[Sequence[int], Sequence[int]], float],
) -> list[list[int]]:
    """Logistic regression on each word's features (the word, its prefixes and suffixes, its shape)
    and its neighbours' (previous and next word): the test sentences' predicted tags."""
    from sklearn.feature_extraction import DictVectorizer

    vectorizer = DictVectorizer()
    features = vectorizer.fit_transform([f for s in train for f in _window_features(s)])

    def flat(sentences: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
        return [f for s in sentences for f in _window_features(s)]

    predicted = _logistic(
        features,
        [t for s in train_tags for t in s],
        vectorizer.transform(flat(validation)),
        [t for s in validation_tags for t in s],
        vectorizer.transform(flat(test)),
        score,
        TAGGER_REGULARISATION,
    )
    out, at = [], 0
    for sentence in test:
        out.append(predicted[at : at + len(sentence)])
        at += len(sentence)
    return out


def _window_features(words: Sequence[str]) -> list[dict[str, Any]]:
    features = []
    for i, word in enumerate(words):
        lower = word.lower()
        f = {
            "w=" + lower: 1,
            "shape=" + _shape(word): 1,
            "title": word.istitle(),
            "upper": word.isupper(),
            "digit": any(c.isdigit() for c in word),
            "prev=" + (words[i - 1].lower() if i else "<s>"): 1,
            "next=" + (words[i + 1].lower() if i + 1 < len(words) else "</s>"): 1,
        }
        for k in (1, 2, 3):
            f[f"pre{k}={lower[:k]}"] = 1
            f[f"suf{k}={lower[-k:]}"] = 1
        features.append(f)
    return features


def _shape(word: str) -> str:
    """'Xxxx', 'dd', 'X.X.': letters and digits by class, runs collapsed."""
    shape = "".join("X" if c.isupper() else "x" if c.islower() else "d" if c.isdigit() else c for c in word)
    return "".join(c for i, c in enumerate(shape) if i == 0 or c != shape[i - 1])


def _logistic(train, train_labels, validation, validation_labels, test, score, choices=REGULARISATION) -> list[int]:
    from sklearn.linear_model import LogisticRegression

    best, best_model = None, None
    for c in choices:
        model = LogisticRegression(C=c, max_iter=1000).fit(train, train_labels)
        value = score(validation_labels, model.predict(validation).tolist())
        if best is None or value > best:
            best, best_model = value, model
    assert best_model is not None  # at least one regularisation was tried
    return best_model.predict(test).tolist()


ARIMA_ORDERS = tuple((p, q) for p in (1, 2, 3, 4, 6, 9, 12) for q in (0, 1, 2))  # AR and MA orders tried, by AIC
ARIMA_MAX_ITERATIONS = 500  # the optimiser's limit for an order whose fit did not converge in statsmodels' default 50
ARIMA_FIT_LIMIT = 600  # the latest training values the parameters are fitted on: seconds, not minutes, on long series


def arima_forecasts(
    series: np.ndarray, train_end: int, targets: np.ndarray, origins: np.ndarray, horizon: int
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]] | None:
    """ARIMA(p, d, q): d = 1 (with a drift) when a KPSS test rejects a level-stationary training
    part, else 0; p and q chosen by AIC on the latest :data:`ARIMA_FIT_LIMIT` values of
    ``series[:train_end]`` and the parameters fitted there, then run over the whole series with those
    parameters: one-step forecasts of the values at ``targets`` (each from the actual values before
    it), ``horizon``-step forecasts from each of ``origins`` ([len(origins), horizon]), and the order;
    None when no order gives a usable fit. A progress bar on stderr counts the orders tried."""
    from statsmodels.tsa.arima.model import ARIMA
    from tqdm import tqdm

    values = series.astype(np.float64)
    fit_on = values[max(0, train_end - ARIMA_FIT_LIMIT) : train_end]
    d = differencing_order(fit_on)
    best = None
    with warnings.catch_warnings():  # non-convergence of a candidate order is expected; AIC judges it
        warnings.simplefilter("ignore")
        for p, q in tqdm(
            ARIMA_ORDERS, desc=f"ARIMA baseline (d = {d}, {len(fit_on)} values)", leave=False, file=sys.stderr
        ):
            try:
                model = ARIMA(fit_on, order=(p, d, q), trend="t" if d else "c")
                fitted = model.fit()
                if not _converged(fitted):  # statsmodels stops its optimiser at 50 iterations: give it room
                    fitted = model.fit(method_kwargs={"maxiter": ARIMA_MAX_ITERATIONS})
            except (ValueError, np.linalg.LinAlgError):
                continue
            # the ARMA part must be stationary and invertible: an AR root on or inside the unit circle
            # (it happens when the optimiser does not converge) forecasts a drifting, exploding series,
            # and an MA root on it (AIC can favour one: quarterly US consumption growth, (4, 0, 1) with a
            # root at 1.000) leaves one-step forecasts that do not follow the data (RMSE 0.94 where AR(1) has 0.54)
            stationary = len(fitted.arroots) == 0 or bool(np.all(np.abs(fitted.arroots) > 1.0 + 1e-3))
            invertible = len(fitted.maroots) == 0 or bool(np.all(np.abs(fitted.maroots) > 1.0 + 1e-3))
            # and the optimiser must have converged: an unconverged fit's AIC is not its model's (quarterly US
            # real investment: (12, 1, 1) stopped unconverged won on AIC with one-step RMSE 219, persistence 73)
            if (
                _converged(fitted)
                and stationary
                and invertible
                and np.isfinite(fitted.aic)
                and (best is None or fitted.aic < best.aic)
            ):
                best = fitted
        if best is None:
            return None
        whole = best.apply(values)
        one_step = np.asarray(whole.predict(start=int(targets[0]), end=int(targets[-1])))[targets - targets[0]]
        multi = (
            np.stack([np.asarray(whole.predict(start=int(o), end=int(o) + horizon - 1, dynamic=True)) for o in origins])
            if len(origins)
            else np.zeros((0, horizon))
        )
    return one_step, multi, tuple(best.model.order)


def _converged(fitted) -> bool:
    return bool((getattr(fitted, "mle_retvals", None) or {}).get("converged", True))


def differencing_order(values: np.ndarray) -> int:
    """1 when the KPSS test rejects level stationarity at 5% (a trend or a random walk: forecast
    the differences), else 0, as auto-ARIMA chooses its first d."""
    from statsmodels.tsa.stattools import kpss

    if len(values) < 8 or np.ptp(values) == 0:  # too short to test, or constant: nothing to difference
        return 0
    with warnings.catch_warnings():  # the p-value is read off a table, and clipped to it with a warning
        warnings.simplefilter("ignore")
        try:
            return int(kpss(values, regression="c", nlags="auto")[1] < 0.05)
        except (ValueError, OverflowError, np.linalg.LinAlgError):  # a degenerate series: read it as it is
            return 0


def against_baselines(
    test: dict[str, Any], metric: str, mode: str, trivial: Sequence[str] = ()
) -> dict[str, Any] | None:
    """The model's test ``metric`` beside every baseline's (``<baseline>_<metric>`` in the task's test
    metrics): which it beats and which it trails (``mode`` "max": higher is better). None when the
    task reported no baseline for it. ``trivial``: the baselines that only set a floor (the most
    frequent label, persistence), named in the result as such."""
    if not isinstance(test.get(metric), float):
        return None
    baselines = {
        key.removesuffix(f"_{metric}"): value
        for key, value in test.items()
        if key.endswith(f"_{metric}") and isinstance(value, float)
    }
    if not baselines:
        return None
    better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
    return {
        "metric": metric,
        "model": test[metric],
        "baselines": baselines,
        "beats": [name for name, value in baselines.items() if better(test[metric], value)],
        "trails": [name for name, value in baselines.items() if not better(test[metric], value)],
        "trivial": [name for name in baselines if name in trivial],
    }


def describe_comparison(comparison: dict[str, Any]) -> str:
    """One log line: the model against its baselines, and what trailing one means."""
    metric, model, values = comparison["metric"], comparison["model"], comparison["baselines"]

    def named(names: list[str]) -> str:
        return ", ".join(f"{name} {values[name]:.4f}" for name in names)

    if not comparison["trails"]:
        if set(comparison["beats"]) <= set(comparison.get("trivial", ())):  # a floor cleared is no claim of strength
            return (
                f"baselines: test {metric} {model:.4f} beats the trivial baseline(s) only "
                f"({named(comparison['beats'])}); "
                "no strong baseline ran, so nothing here says a simpler model would not do as well"
            )
        return f"baselines: test {metric} {model:.4f} beats every baseline ({named(comparison['beats'])})"
    beaten = f" (it beats {named(comparison['beats'])})" if comparison["beats"] else ""
    return (
        f"baselines: test {metric} {model:.4f} does not beat {named(comparison['trails'])}{beaten}: on this data a "
        "simpler model does as well; more data, `seqpipe tune` or another [input] kind may change that"
    )
