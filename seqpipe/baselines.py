"""Strong classical baselines, computed with scikit-learn on the same splits as the model.

What a user would build in seconds before trusting a recurrent model: character n-gram TF-IDF
with logistic regression for texts, logistic regression on per-feature summaries for number
sequences, logistic regression on word-window features for tags, an
ARIMA model (statsmodels) for a series. The text classifier picks its regularisation on the
validation split (as the model picks its epoch); the tagger, whose fit takes about 20 s on 5,000
sentences, uses one (C = 10); ARIMA picks its order by AIC on the training part. All predict the
test split and never touch the exported model.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

REGULARISATION = (1.0, 10.0, 100.0)  # logistic regression's C, chosen on validation (text)
TAGGER_REGULARISATION = (10.0,)


def text_classifier(train: Sequence[str], train_labels: Sequence[int], validation: Sequence[str], validation_labels: Sequence[int],
                    test: Sequence[str], score: Callable[[Sequence[int], Sequence[int]], float], lowercase: bool) -> list[int]:
    """Character 1-5-gram TF-IDF (within word boundaries, sublinear counts) + logistic regression:
    the test split's predicted labels."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 5), sublinear_tf=True, lowercase=lowercase, min_df=2)
    features = vectorizer.fit_transform(train)
    return _logistic(features, train_labels, vectorizer.transform(validation), validation_labels, vectorizer.transform(test), score)


def summary_classifier(train: Sequence[np.ndarray], train_labels: Sequence[int], validation: Sequence[np.ndarray],
                       validation_labels: Sequence[int], test: Sequence[np.ndarray],
                       score: Callable[[Sequence[int], Sequence[int]], float]) -> list[int]:
    """Logistic regression on each feature's mean, standard deviation, minimum, maximum, first and
    last value (standardised), and the sequence's length: the test split's predicted labels."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(sequence_summaries(train))
    features = lambda values: scaler.transform(sequence_summaries(values))  # noqa: E731
    return _logistic(features(train), train_labels, features(validation), validation_labels, features(test), score)


def sequence_summaries(values: Sequence[np.ndarray]) -> np.ndarray:
    """Per sequence: each feature's mean, std, minimum, maximum, first and last value, and the length."""
    return np.stack([np.concatenate([v.mean(0), v.std(0), v.min(0), v.max(0), v[0], v[-1], [len(v)]]) for v in values])


def window_tagger(train: Sequence[Sequence[str]], train_tags: Sequence[Sequence[int]], validation: Sequence[Sequence[str]],
                  validation_tags: Sequence[Sequence[int]], test: Sequence[Sequence[str]],
                  score: Callable[[Sequence[int], Sequence[int]], float]) -> list[list[int]]:
    """Logistic regression on each word's features (the word, its prefixes and suffixes, its shape)
    and its neighbours' (previous and next word): the test sentences' predicted tags."""
    from sklearn.feature_extraction import DictVectorizer

    vectorizer = DictVectorizer()
    features = vectorizer.fit_transform([f for s in train for f in _window_features(s)])
    flat = lambda sentences: [f for s in sentences for f in _window_features(s)]
    predicted = _logistic(features, [t for s in train_tags for t in s], vectorizer.transform(flat(validation)),
                          [t for s in validation_tags for t in s], vectorizer.transform(flat(test)), score, TAGGER_REGULARISATION)
    out, at = [], 0
    for sentence in test:
        out.append(predicted[at: at + len(sentence)])
        at += len(sentence)
    return out


def _window_features(words: Sequence[str]) -> list[dict[str, Any]]:
    features = []
    for i, word in enumerate(words):
        lower = word.lower()
        f = {"w=" + lower: 1, "shape=" + _shape(word): 1, "title": word.istitle(), "upper": word.isupper(),
             "digit": any(c.isdigit() for c in word), "prev=" + (words[i - 1].lower() if i else "<s>"): 1,
             "next=" + (words[i + 1].lower() if i + 1 < len(words) else "</s>"): 1}
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
    return best_model.predict(test).tolist()


ARIMA_ORDERS = tuple((p, 0, q) for p in (1, 2, 3, 4, 6, 9, 12) for q in (0, 1, 2))


def arima_forecasts(series: np.ndarray, train_end: int, targets: np.ndarray, origins: np.ndarray,
                    horizon: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """ARIMA(p, 0, q), the order chosen by AIC on ``series[:train_end]`` and its parameters fitted
    there, then run over the whole series with those parameters: one-step forecasts of the values
    at ``targets`` (each from the actual values before it), ``horizon``-step forecasts from each of
    ``origins`` ([len(origins), horizon]), and the order."""
    from statsmodels.tsa.arima.model import ARIMA

    values = series.astype(np.float64)
    best = None
    with warnings.catch_warnings():  # non-convergence of a candidate order is expected; AIC judges it
        warnings.simplefilter("ignore")
        for order in ARIMA_ORDERS:
            try:
                fitted = ARIMA(values[:train_end], order=order).fit()
            except (ValueError, np.linalg.LinAlgError):
                continue
            # d = 0 models must be stationary: a fit with an AR root on or inside the unit circle (it
            # happens when the optimiser does not converge) forecasts a drifting, exploding series
            stationary = len(fitted.arroots) == 0 or bool(np.all(np.abs(fitted.arroots) > 1.0 + 1e-6))
            if stationary and np.isfinite(fitted.aic) and (best is None or fitted.aic < best.aic):
                best = fitted
        whole = best.apply(values)
        one_step = np.asarray(whole.predict(start=int(targets[0]), end=int(targets[-1])))[targets - targets[0]]
        multi = np.stack([np.asarray(whole.predict(start=int(o), end=int(o) + horizon - 1, dynamic=True)) for o in origins]) \
            if len(origins) else np.zeros((0, horizon))
    return one_step, multi, tuple(best.model.order)


def against_baselines(test: dict[str, Any], metric: str, mode: str) -> dict[str, Any] | None:
    """The model's test ``metric`` beside every baseline's (``<baseline>_<metric>`` in the task's test
    metrics): which it beats and which it trails (``mode`` "max": higher is better). None when the
    task reported no baseline for it."""
    if not isinstance(test.get(metric), float):
        return None
    baselines = {key.removesuffix(f"_{metric}"): value for key, value in test.items()
                 if key.endswith(f"_{metric}") and isinstance(value, float)}
    if not baselines:
        return None
    better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
    return {"metric": metric, "model": test[metric], "baselines": baselines,
            "beats": [name for name, value in baselines.items() if better(test[metric], value)],
            "trails": [name for name, value in baselines.items() if not better(test[metric], value)]}


def describe_comparison(comparison: dict[str, Any]) -> str:
    """One log line: the model against its baselines, and what trailing one means."""
    metric, model, values = comparison["metric"], comparison["model"], comparison["baselines"]

    def named(names: list[str]) -> str:
        return ", ".join(f"{name} {values[name]:.4f}" for name in names)

    if not comparison["trails"]:
        return f"baselines: test {metric} {model:.4f} beats every baseline ({named(comparison['beats'])})"
    beaten = f" (it beats {named(comparison['beats'])})" if comparison["beats"] else ""
    return (f"baselines: test {metric} {model:.4f} does not beat {named(comparison['trails'])}{beaten}: on this data a "
            "simpler model does as well; more data, `seqpipe tune` or another [input] kind may change that")
