"""Uncertainty, comparisons and calibration for the benchmark (numpy/scipy only; no TensorFlow).

Two sources of variation are kept apart:

* seed variation (different trainings of one configuration): :func:`t_interval` over the seeds'
  test metrics;
* test-sample variation (a finite test set), given the trained models: a stratified bootstrap of
  the test images (:func:`stratified_bootstrap`), evaluated for every seed at once by
  :func:`bootstrap_metric` and summarised per configuration (:func:`config_bootstrap`) or per
  pair of configurations on the same test set (:func:`paired_bootstrap`), with Holm's
  correction (:func:`holm`) across the comparisons of a family. :class:`SharedBootstrap`
  keeps one dataset's resamples, so that any two of its configurations compare pairwise.

The bootstrap is vectorised: a resample is a row of an index matrix ``(B, n)`` and every metric
is computed for all rows by counting (``np.bincount``), never by a Python loop over resamples.
Labels are integer class indices ``0..k-1`` matching the probability columns.

Calibration: top-label expected calibration error and reliability bins, the multi-class Brier
score, and temperature scaling fitted on validation log-likelihood.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy import optimize, special
from scipy import stats as sps

# The metrics of a run's metrics.json that the study reads and can bootstrap.
METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "precision_macro", "recall_macro",
           "specificity_macro", "auc", "sensitivity", "specificity")
TWO_CLASS_METRICS = ("sensitivity", "specificity")
TEMPERATURE_BOUNDS = (1e-2, 1e2)


# --- seed variation ---------------------------------------------------------------------------

def t_interval(values: Iterable[float | None], level: float = 0.95) -> tuple[float, float, float, int]:
    """Mean and two-sided t-interval of ``values`` (e.g. one metric over seeds).

    None and NaN are ignored; ``n`` is the number of values used. The interval is NaN when
    ``n < 2`` (and the mean too when ``n == 0``).
    """
    data = np.array([np.nan if v is None else v for v in values], dtype=float)
    data = data[~np.isnan(data)]
    n = len(data)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(data.mean())
    if n < 2:
        return mean, float("nan"), float("nan"), n
    half = sps.t.ppf(0.5 + level / 2, n - 1) * data.std(ddof=1) / np.sqrt(n)
    return mean, float(mean - half), float(mean + half), n



def bounded_t_interval(values: Iterable[float | None], bounds: tuple[float, float],
                       level: float = 0.95) -> tuple[float, float, float, int]:
    """:func:`t_interval` with its ends clipped to the value's range ``bounds`` (e.g. [0, 1]
    for a share). A t-interval of a few seeds near a bound reaches past it (sensitivity
    1.08); the true mean lies in the range, so clipping drops only impossible values and
    keeps the interval's coverage. Clipping rather than a logit-scale interval because
    seeds often score exactly 0 or 1, where the logit is infinite."""
    lower, upper = bounds
    mean, low, high, n = t_interval(values, level)
    return mean, float(np.clip(low, lower, upper)), float(np.clip(high, lower, upper)), n

# --- test-sample variation: resampling --------------------------------------------------------

def stratified_bootstrap(labels: Sequence, n_resamples: int, seed: int) -> np.ndarray:
    """Index matrix ``(n_resamples, n)``: each row resamples the test images with replacement
    within each class, so every resample keeps the test set's class counts.

    Column ``j`` of every row holds an image of the same class as image ``j`` (so
    ``labels[indices[b]] == labels``). Seeded with ``numpy.random.default_rng(seed)``; classes
    are drawn in sorted order, so the same seed gives the same matrix.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    _, class_of = np.unique(np.asarray(labels), return_inverse=True)
    rng = np.random.default_rng(seed)
    indices = np.empty((n_resamples, len(class_of)), dtype=np.int64)
    for cls in np.unique(class_of):
        members = np.flatnonzero(class_of == cls)
        indices[:, members] = members[rng.integers(0, len(members), size=(n_resamples, len(members)))]
    return indices


# --- test-sample variation: metrics over an index matrix --------------------------------------

def _ratio(numerator: np.ndarray, denominator: np.ndarray, empty: float) -> np.ndarray:
    """numerator / denominator, ``empty`` where the denominator is zero."""
    out = np.full(np.broadcast(numerator, denominator).shape, empty, dtype=float)
    return np.divide(numerator, denominator, out=out, where=denominator > 0)


def _confusions(y_true: np.ndarray, y_pred: np.ndarray, indices: np.ndarray, k: int) -> np.ndarray:
    """Confusion matrices ``(B, k, k)`` (rows: true class, columns: predicted) of every resample."""
    n_rows = len(indices)
    cell = (np.arange(n_rows)[:, None] * k + y_true[indices]) * k + y_pred[indices]
    return np.bincount(cell.ravel(), minlength=n_rows * k * k).reshape(n_rows, k, k)


def _confusion_metric(name: str, confusion: np.ndarray, positive: int | None) -> np.ndarray:
    """A confusion-matrix metric for every resample, with scikit-learn's conventions."""
    true_pos = np.diagonal(confusion, axis1=1, axis2=2)
    actual, predicted = confusion.sum(axis=2), confusion.sum(axis=1)
    if name == "accuracy":
        return true_pos.sum(axis=1) / confusion.sum(axis=(1, 2))
    if name == "balanced_accuracy":  # sklearn: mean recall over classes present in y_true
        return np.nanmean(_ratio(true_pos, actual, np.nan), axis=1)
    if name == "recall_macro":  # sklearn with labels=range(k), zero_division=0
        return _ratio(true_pos, actual, 0.0).mean(axis=1)
    if name == "precision_macro":
        return _ratio(true_pos, predicted, 0.0).mean(axis=1)
    if name == "f1_macro":  # 2TP / (2TP + FP + FN) = 2TP / (actual + predicted)
        return _ratio(2 * true_pos, actual + predicted, 0.0).mean(axis=1)
    if name == "specificity_macro":  # one-vs-rest TN / negatives, averaged over classes that have negatives
        total = confusion.sum(axis=(1, 2))[:, None]
        negatives = total - actual
        return np.nanmean(_ratio(negatives - predicted + true_pos, negatives, np.nan), axis=1)
    recall = _ratio(true_pos, actual, np.nan)
    return recall[:, positive] if name == "sensitivity" else recall[:, 1 - positive]


def _mann_whitney_auc(scores: np.ndarray, is_positive: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """AUC-ROC of every resample: the share of (positive, negative) pairs ranked correctly, ties
    counting one half (the Mann-Whitney U statistic, which equals scikit-learn's ROC area).

    Resamples only repeat the original scores, so each row is counted over the ``V`` distinct
    scores (``(B, V)`` counts) instead of sorting every row.
    """
    values, value_of = np.unique(scores, return_inverse=True)
    n_rows, n_values = len(indices), len(values)
    cell = np.arange(n_rows)[:, None] * n_values + value_of[indices]
    positive_rows = is_positive[indices]

    def counts(mask: np.ndarray) -> np.ndarray:
        return np.bincount(cell[mask], minlength=n_rows * n_values).reshape(n_rows, n_values)

    positives, negatives = counts(positive_rows), counts(~positive_rows)
    negatives_below = np.cumsum(negatives, axis=1) - negatives
    pairs_won = (positives * (negatives_below + 0.5 * negatives)).sum(axis=1)
    return _ratio(pairs_won, positives.sum(axis=1) * negatives.sum(axis=1), np.nan)


def _auc(y_true: np.ndarray, probabilities: np.ndarray, indices: np.ndarray,
         positive: int | None) -> np.ndarray:
    """Binary: AUC of the positive column (column 1 without one). More classes: one-vs-rest
    macro average, as ``roc_auc_score(multi_class="ovr", average="macro")``; NaN for a resample
    where a class is missing."""
    k = probabilities.shape[1]
    if k == 2:
        column = 1 if positive is None else positive
        return _mann_whitney_auc(probabilities[:, column], y_true == column, indices)
    per_class = [_mann_whitney_auc(probabilities[:, c], y_true == c, indices) for c in range(k)]
    return np.mean(per_class, axis=0)


def _check_inputs(name: str, y_true: np.ndarray, probabilities: np.ndarray, positive: int | None) -> None:
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    if probabilities.ndim != 2 or len(probabilities) != len(y_true):
        raise ValueError(f"probabilities must be (n_images, n_classes) with n_images={len(y_true)}, "
                         f"got shape {probabilities.shape}")
    k = probabilities.shape[1]
    if len(y_true) and (y_true.min() < 0 or y_true.max() >= k):
        raise ValueError(f"labels must be class indices 0..{k - 1}")
    if positive is not None and (k != 2 or positive not in (0, 1)):
        raise ValueError(f"positive must be 0 or 1 with two classes, got {positive} with {k} classes")
    if name in TWO_CLASS_METRICS and positive is None:
        raise ValueError(f"{name} needs two classes and a positive class index")


def bootstrap_metric(name: str, y_true: np.ndarray, probabilities: np.ndarray, indices: np.ndarray,
                     positive: int | None = None) -> np.ndarray:
    """Metric ``name`` on every resample (row) of ``indices``: an array ``(B,)``.

    ``name`` is one of :data:`METRICS`. Predictions are the argmax of ``probabilities``
    (``(n, k)``); ``y_true`` holds class indices. ``positive`` is the positive class's column
    (two classes only), needed for ``sensitivity`` (its recall) and ``specificity`` (the other
    class's recall), and used by binary ``auc``. On the identity resample
    (``np.arange(n)[None]``) each value equals scikit-learn's (macro averages with
    ``labels=range(k), zero_division=0``; balanced accuracy over the classes present).
    """
    y_true, probabilities = np.asarray(y_true), np.asarray(probabilities, dtype=float)
    indices = np.atleast_2d(np.asarray(indices))
    _check_inputs(name, y_true, probabilities, positive)
    if name == "auc":
        return _auc(y_true, probabilities, indices, positive)
    k = probabilities.shape[1]
    confusion = _confusions(y_true, probabilities.argmax(axis=1), indices, k)
    return _confusion_metric(name, confusion, positive)


def mean_over_seeds(name: str, y_true: np.ndarray, probabilities_per_seed: Sequence[np.ndarray],
                     indices: np.ndarray, positive: int | None) -> np.ndarray:
    """Metric per resample, averaged over the seeds' probabilities (same resamples for all)."""
    if len(probabilities_per_seed) == 0:
        raise ValueError("no seeds: probabilities_per_seed is empty")
    per_seed = [bootstrap_metric(name, y_true, p, indices, positive) for p in probabilities_per_seed]
    return np.mean(per_seed, axis=0)


class SharedBootstrap:
    """One test set's stratified resamples, shared by every configuration evaluated on it
    (so any two configurations compare pairwise on the same resamples)."""

    def __init__(self, y_true: np.ndarray, resamples: int, seed: int, positive: int | None):
        self.y_true, self.positive = y_true, positive
        self.indices = stratified_bootstrap(y_true, resamples, seed)
        self.identity = np.arange(len(y_true))[None, :]

    def resampled(self, metric: str, probabilities: list[np.ndarray]) -> np.ndarray:
        """The metric, averaged over the seeds' ``probabilities``, on every resample."""
        return mean_over_seeds(metric, self.y_true, probabilities, self.indices, self.positive)

    def estimate(self, metric: str, probabilities: list[np.ndarray]) -> float:
        """The metric, averaged over the seeds' ``probabilities``, on the whole test set."""
        return float(mean_over_seeds(metric, self.y_true, probabilities, self.identity, self.positive)[0])


def config_bootstrap(y_true: np.ndarray, probabilities_per_seed: Sequence[np.ndarray], metric: str,
                     n_resamples: int, seed: int, positive: int | None = None) -> dict:
    """Estimate and 95% bootstrap interval of one configuration's metric.

    ``probabilities_per_seed``: one ``(n, k)`` array per trained seed, all on the same test set
    in the same order. ``estimate`` is the mean over seeds of the metric on the full test set.
    ``low``/``high`` are the 2.5th/97.5th percentiles of that mean over seeds when the test
    images are resampled (stratified by class, the same resample for every seed).

    The interval covers test-sample variation given these trained models only; it does not
    cover seed-to-seed (training) variation, which :func:`t_interval` over seeds describes.
    """
    y_true = np.asarray(y_true)
    indices = stratified_bootstrap(y_true, n_resamples, seed)
    identity = np.arange(len(y_true))[None, :]
    estimate = mean_over_seeds(metric, y_true, probabilities_per_seed, identity, positive)[0]
    resampled = mean_over_seeds(metric, y_true, probabilities_per_seed, indices, positive)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return {"estimate": float(estimate), "low": float(low), "high": float(high)}


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "no difference" from resampled differences.

    ``2 * min(share of differences <= 0, share >= 0)``, bounded to ``[1/B, 1]``: the smallest
    level at which the percentile interval excludes zero. Its resolution is ``1/B``, so ``1/B``
    means "at most 1/B". NaN when any difference is NaN.
    """
    differences = np.asarray(differences, dtype=float)
    if np.isnan(differences).any():
        return float("nan")
    n_rows = len(differences)
    two_sided = 2 * min(np.mean(differences <= 0), np.mean(differences >= 0))
    return float(np.clip(two_sided, 1 / n_rows, 1.0))


def paired_bootstrap(y_true: np.ndarray, probs_a_per_seed: Sequence[np.ndarray],
                     probs_b_per_seed: Sequence[np.ndarray], metric: str, n_resamples: int, seed: int,
                     positive: int | None = None) -> dict:
    """Difference A - B of two configurations' metric (each averaged over its seeds) on the same
    test set, with a 95% percentile interval and a two-sided p-value (:func:`bootstrap_p_value`).

    Both configurations are evaluated on the same stratified resamples of the test images, so
    the comparison is paired. Like :func:`config_bootstrap`, it covers test-sample variation
    given the trained models, not seed variation.
    """
    y_true = np.asarray(y_true)
    indices = stratified_bootstrap(y_true, n_resamples, seed)
    identity = np.arange(len(y_true))[None, :]

    def difference(rows: np.ndarray) -> np.ndarray:
        return (mean_over_seeds(metric, y_true, probs_a_per_seed, rows, positive)
                - mean_over_seeds(metric, y_true, probs_b_per_seed, rows, positive))

    resampled = difference(indices)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return {"difference": float(difference(identity)[0]), "low": float(low), "high": float(high),
            "p_value": bootstrap_p_value(resampled)}


def holm(p_values: Iterable[float | None]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down), in the input order.

    The i-th smallest of m p-values is multiplied by ``m - i + 1``, made non-decreasing in that
    order and capped at 1. None/NaN entries stay NaN and do not count in m.
    """
    p = np.array([np.nan if v is None else v for v in p_values], dtype=float)
    adjusted = np.full(p.shape, np.nan)
    present = np.flatnonzero(~np.isnan(p))
    order = present[np.argsort(p[present], kind="stable")]
    m = len(order)
    scaled = p[order] * (m - np.arange(m))
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


# --- calibration ------------------------------------------------------------------------------

def _top_label(y_true: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confidence (largest probability) and correctness of the argmax prediction per image."""
    probabilities = np.asarray(probabilities, dtype=float)
    return probabilities.max(axis=1), probabilities.argmax(axis=1) == np.asarray(y_true)


def _bin_sums(y_true: np.ndarray, probabilities: np.ndarray, n_bins: int):
    """Per confidence bin: edges, image count, summed confidence, summed correctness.

    Equal-width bins over [0, 1]; bin i holds confidences in (i/n_bins, (i+1)/n_bins], the first
    bin also holds 0.
    """
    confidence, correct = _top_label(y_true, probabilities)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_of = np.digitize(confidence, edges[1:-1], right=True)
    count = np.bincount(bin_of, minlength=n_bins)
    confidence_sum = np.bincount(bin_of, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(bin_of, weights=correct.astype(float), minlength=n_bins)
    return edges, count, confidence_sum, correct_sum


def expected_calibration_error(y_true: np.ndarray, probabilities: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE: sum over bins of (bin count / n) * |accuracy - mean confidence| in the bin.

    Confidence is the largest predicted probability, accuracy whether its class is the label;
    bins as in :func:`reliability_bins` (equal width, (low, high]).
    """
    _, count, confidence_sum, correct_sum = _bin_sums(y_true, probabilities, n_bins)
    # (count/n) * |correct_sum/count - confidence_sum/count| = |correct_sum - confidence_sum| / n
    return float(np.abs(correct_sum - confidence_sum).sum() / count.sum())


def reliability_bins(y_true: np.ndarray, probabilities: np.ndarray, n_bins: int = 15) -> list[dict]:
    """One dict per equal-width confidence bin (low, high], in order: ``low``, ``high``, ``count``,
    mean ``confidence`` and ``accuracy`` of its images (None for an empty bin)."""
    edges, count, confidence_sum, correct_sum = _bin_sums(y_true, probabilities, n_bins)
    return [
        {"low": float(edges[i]), "high": float(edges[i + 1]), "count": int(count[i]),
         "confidence": float(confidence_sum[i] / count[i]) if count[i] else None,
         "accuracy": float(correct_sum[i] / count[i]) if count[i] else None}
        for i in range(n_bins)
    ]


def brier_score(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """Multi-class Brier score: mean over images of sum over classes of (p - one-hot label)^2.

    Ranges from 0 (perfect) to 2. With two classes it is twice the binary Brier score
    ``mean((p_positive - y)^2)``, since both columns contribute the same squared error.
    """
    probabilities = np.asarray(probabilities, dtype=float)
    one_hot = np.eye(probabilities.shape[1])[np.asarray(y_true)]
    return float(((probabilities - one_hot) ** 2).sum(axis=1).mean())


def negative_log_likelihood(logits_or_log_probabilities: np.ndarray, y_true: np.ndarray,
                            temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under softmax(z / temperature)."""
    scaled = np.asarray(logits_or_log_probabilities, dtype=float) / temperature
    log_probs = special.log_softmax(scaled, axis=1)
    return float(-log_probs[np.arange(len(log_probs)), np.asarray(y_true)].mean())


def fit_temperature(logits_or_log_probabilities: np.ndarray, y_true: np.ndarray,
                    bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """Temperature T minimising the validation NLL of softmax(z / T).

    ``z`` are logits or log-probabilities (softmax is unchanged by a per-image shift, so both
    give the same T). T > 1 softens over-confident predictions. Searched on log T within
    ``bounds`` (scipy's bounded scalar minimiser); a perfectly separated set drives T to the
    lower bound. A label whose log-probability is -inf makes every T infinitely bad: take
    ``np.log(np.clip(p, 1e-12, 1))`` of probabilities that may underflow to 0.
    """
    z = np.asarray(logits_or_log_probabilities, dtype=float)
    y_true = np.asarray(y_true)
    if np.isnan(z).any() or np.isposinf(z).any():
        raise ValueError("logits/log-probabilities contain NaN or +inf")
    if not np.isfinite(z[np.arange(len(z)), y_true]).all():
        raise ValueError("some label has log-probability -inf; clip probabilities before the log")
    result = optimize.minimize_scalar(
        lambda log_t: negative_log_likelihood(z, y_true, np.exp(log_t)),
        bounds=np.log(bounds), method="bounded", options={"xatol": 1e-8},
    )
    return float(np.exp(result.x))


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities rescaled by T: softmax(log p / T), i.e. p^(1/T) renormalised per image.

    Equals softmax(logits / T) for p = softmax(logits); a zero probability stays zero.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    with np.errstate(divide="ignore"):
        log_p = np.log(np.asarray(probabilities, dtype=float))
    return special.softmax(log_p / temperature, axis=1)
