"""Uncertainty, comparisons and calibration for the benchmark (numpy/scipy; scikit-learn for the
calibration slope; no TensorFlow).

Two sources of variation, separately and together:

* seed variation (different trainings of one configuration): :func:`t_interval` over the seeds'
  test metrics;
* test-sample variation (a finite test set), given the trained models: a stratified bootstrap of
  the test images, or of groups of them (patients) drawn whole (:func:`resample_counts`);
* both, for every claim about a *configuration* (:func:`seeds_and_images`): the mean over
  seeds has the variance s²/S of the seeds' values (training variation, and how each seed's
  errors fall on these test images) plus the part of the image-resampling variance that all
  seeds share (the test set's own luck; seeds and test images are crossed, every model
  predicts every image), and is referred to a t distribution with S - 1 degrees of freedom
  (the statistic's own, Welch-Satterthwaite's, only in :func:`detectable_difference`: Welch
  1947, Biometrika 34:28-35; Satterthwaite 1946, Biometrics Bull. 2:110-114).
  :func:`config_bootstrap` gives one configuration's interval,
  :func:`paired_bootstrap` the difference of two configurations on the same seeds and
  images, with a two-sided p-value, and Holm's correction (:func:`holm`) across a family;
  :func:`detectable_difference` and :func:`seeds_to_detect` what such a test can detect.
  :class:`SharedBootstrap` keeps one dataset's resamples, so that any two of its
  configurations compare pairwise.

Why not draw the seeds too (a two-way bootstrap): S seeds drawn with replacement have at most
C(2S-1, S) distinct outcomes (10 for S = 3), their variance is (S-1)/S of the seeds' sample
variance, and percentile cut-offs act like a normal instead of a t with S-1 degrees of freedom:
at 3 seeds two equal configurations "differed" at p < 0.05 in up to a quarter of simulated
studies (tests/unit/test_null_simulation.py).

The bootstrap is vectorised: a resample is a row of a count matrix ``(B, n)`` (how often each
test image is drawn) and every metric is computed for all rows by weighted counting
(``np.bincount``), never by a Python loop over resamples. It is written here because
``scipy.stats.bootstrap`` draws independent observations (paired across samples at most): it
cannot draw patients whole, cross seeds with images, or keep one dataset's resamples for every
pair of configurations.
Labels are integer class indices ``0..k-1`` matching the probability columns.

Calibration: top-label expected calibration error and reliability bins, the multi-class Brier
score (both also on every bootstrap resample), calibration slope and intercept, and temperature
scaling fitted on validation log-likelihood.
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
# Probabilities are floored here before the log, in fitting the temperature and in applying
# it alike: a probability that underflowed to 0 would give a label log p = -inf, which makes
# every temperature infinitely bad.
PROBABILITY_FLOOR = 1e-12
ECE_BINS = 15  # equal-width bins of top-label confidence over [0, 1]
# A calibration slope with a larger standard error cannot tell slope 1 from slope 0 within one
# standard error: no number is reported (calibration_slope_intercept).
SLOPE_SE_LIMIT = 1.0


def positive_column(positive: int | None) -> int:
    """The probability column of a two-class outcome: the positive class's (``positive``),
    the second class's without one."""
    return 1 if positive is None else positive


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

def resample_counts(labels: Sequence, n_resamples: int, seed: int,
                    groups: np.ndarray | None = None) -> np.ndarray:
    """Count matrix ``(n_resamples, n)``: how often each test image is drawn in each resample.

    The unit drawn is a group (``groups``: one id per test image, e.g. its patient; None: each
    image its own group). Groups are drawn whole, with replacement, within strata; a group's
    stratum is the set of classes among its images, so every resample keeps each stratum's
    number of groups, and with one image per group it is the class-stratified bootstrap of the
    images (the cluster bootstrap: Davison & Hinkley 1997, section 3.8; Field & Welsh
    2007). Seeded with ``numpy.random.default_rng(seed)``.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    _, class_of = np.unique(np.asarray(labels), return_inverse=True)
    n = len(class_of)
    if groups is None:
        group_of = np.arange(n)
    else:
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise ValueError(f"groups must hold one id per test image ({n}), got shape {groups.shape}")
        _, group_of = np.unique(groups, return_inverse=True)
    n_groups = int(group_of.max()) + 1 if n else 0
    membership = np.zeros((n_groups, int(class_of.max()) + 1 if n else 0), dtype=bool)
    membership[group_of, class_of] = True
    _, stratum_of = np.unique(membership, axis=0, return_inverse=True)
    stratum_of = stratum_of.ravel()
    rng = np.random.default_rng(seed)
    group_counts = np.zeros((n_resamples, n_groups), dtype=np.int64)
    for stratum in np.unique(stratum_of):
        members = np.flatnonzero(stratum_of == stratum)
        drawn = members[rng.integers(0, len(members), size=(n_resamples, len(members)))]
        group_counts += _row_counts(drawn, n_groups)
    return group_counts[:, group_of]


def _row_counts(indices: np.ndarray, n: int) -> np.ndarray:
    """``(B, n)`` counts of each index ``0..n-1`` in each row of an index matrix."""
    n_rows = len(indices)
    cell = np.arange(n_rows)[:, None] * n + indices
    return np.bincount(cell.ravel(), minlength=n_rows * n).reshape(n_rows, n)


# --- seeds and test images together: the claims ---------------------------------------------

POWER = 0.8  # the power at which detectable_difference states what a study can detect
LARGE_DF = 1e4  # degrees of freedom above which the t is taken as the normal


def seeds_and_images(per_seed: np.ndarray, per_seed_estimate: np.ndarray, level: float = 0.95) -> dict:
    """Mean over seeds of a metric (or of a paired difference of two configurations' metrics),
    with its standard error, t-interval and two-sided p-value of "zero".

    ``per_seed`` (``(S, B)``): each seed's value on every image resample; ``per_seed_estimate``
    (``(S,)``): on the whole test set. Over the image resamples, the mean over seeds varies by
    ``image_variance`` v = g + h/S and each seed by w = g + h on average: g
    (``image_shared_variance``, (S v - w)/(S - 1), clipped to [0, v]) is the test set's luck
    that every seed shares, h the seed-by-image interaction. The seeds' sample variance s²
    (``seed_variance``, per seed) already holds h, since each seed meets the test set with its
    own errors; so the mean's variance is s²/S + g (training and test-sample variation, each
    counted once; seeds and test images are crossed random effects, Owen 2007, Ann. Appl.
    Stat. 1(2):386-411). The t has S - 1 degrees of freedom: exact where the seeds dominate,
    conservative where the test set's shared part does. The Welch-Satterthwaite degrees of
    freedom (s²/S + g)² (S - 1) / (s²/S)² would be larger, but with 3 seeds they are estimated
    from a seed variance of 2 degrees of freedom and grow whenever s² comes out small by
    chance: two equal configurations then "differed" at p < 0.05 in 6-7% of simulated
    studies and a configuration's interval covered its mean in 92% of them
    (tests/unit/test_null_simulation.py, config/README.md).
    With one seed the seed part is unknown and left out (the interval covers the test images
    only); no claim is made below 3 seeds anyway. Zero variance: p is 1 for a difference of
    exactly 0 and 0 otherwise.
    """
    per_seed, estimates = np.atleast_2d(per_seed), np.asarray(per_seed_estimate, dtype=float)
    n_seeds = len(estimates)
    estimate = float(estimates.mean())
    seed_variance = float(estimates.var(ddof=1)) if n_seeds > 1 else float("nan")
    image_variance = float(per_seed.mean(axis=0).var(ddof=1)) if per_seed.shape[1] > 1 else 0.0
    shared = image_variance
    if n_seeds > 1 and per_seed.shape[1] > 1:  # each seed's own image variance is shared + interaction
        own = float(per_seed.var(axis=1, ddof=1).mean())
        shared = float(np.clip((n_seeds * image_variance - own) / (n_seeds - 1), 0.0, image_variance))
    se, df = standard_error(seed_variance, shared, n_seeds)
    if np.isnan(se):
        p_value, half = float("nan"), float("nan")
    elif se == 0:
        p_value, half = (1.0 if estimate == 0 else 0.0), 0.0
    else:
        p_value = float(2 * sps.t.sf(abs(estimate) / se, df))
        half = float(sps.t.ppf(0.5 + level / 2, df) * se)
    return {"estimate": estimate, "low": estimate - half, "high": estimate + half, "p_value": p_value,
            "se": se, "df": df, "seed_variance": seed_variance, "image_variance": image_variance,
            "image_shared_variance": shared, "n_seeds": n_seeds}


def standard_error(seed_variance: float, image_variance: float, n_seeds: int) -> tuple[float, float]:
    """Standard error of a mean over ``n_seeds`` seeds (per-seed variance ``seed_variance``,
    NaN: unknown, left out) on a test set whose shared part varies the mean by
    ``image_variance``, and the degrees of freedom of its t: ``n_seeds`` - 1, inf where the
    seed part is unknown (the test images only)."""
    known = n_seeds > 1 and not np.isnan(seed_variance)
    seeds = seed_variance / n_seeds if known else 0.0
    return float(np.sqrt(seeds + image_variance)), float(n_seeds - 1) if known else np.inf


def satterthwaite_df(seed_variance: float, image_variance: float, n_seeds: int) -> float:
    """The Welch-Satterthwaite degrees of freedom of the standard error's square,
    (s²/S + g)² (S - 1) / (s²/S)², g counting as known: how the statistic of
    :func:`seeds_and_images` is distributed (not the t it is referred to: that one takes
    S - 1, see there). Inf where the seed part is 0."""
    seeds = seed_variance / n_seeds
    return float((seeds + image_variance) ** 2 * (n_seeds - 1) / seeds ** 2) if seeds > 0 else np.inf


def _power(noncentrality: float, critical: float, df: float) -> float:
    """Probability that a two-sided t-test at critical value ``critical`` rejects when the
    true difference is ``noncentrality`` standard errors (noncentral t; normal above
    :data:`LARGE_DF`)."""
    if df > LARGE_DF:
        return float(sps.norm.sf(critical - noncentrality) + sps.norm.cdf(-critical - noncentrality))
    # scipy's noncentral t gives NaN far in the lower tail, where the probability is ~0
    wrong_side = float(np.nan_to_num(sps.nct.cdf(-critical, df, noncentrality), nan=0.0))
    return float(sps.nct.sf(critical, df, noncentrality)) + wrong_side


def detectable_difference(seed_variance: float, image_variance: float, n_seeds: int, alpha: float,
                          power: float = POWER) -> float:
    """The smallest true difference that :func:`seeds_and_images`'s test at level ``alpha``
    (two-sided: critical value of a t with ``n_seeds`` - 1 degrees of freedom)
    detects with probability ``power``, for a study with ``n_seeds`` seeds and these
    variances (per-seed ``seed_variance``, ``image_variance`` the test set's shared part):
    the noncentrality at which the statistic, a noncentral t with the Welch-Satterthwaite
    degrees of freedom, exceeds the critical value with that probability, times the standard
    error. NaN where the standard error is unknown (fewer than 2 seeds), 0 where it is 0."""
    if n_seeds < 2 or np.isnan(seed_variance) or np.isnan(image_variance):
        return float("nan")
    se, _ = standard_error(seed_variance, image_variance, n_seeds)
    if se == 0:
        return 0.0
    critical = sps.t.ppf(1 - alpha / 2, n_seeds - 1)
    df = satterthwaite_df(seed_variance, image_variance, n_seeds)
    upper = critical + 10.0
    while _power(upper, critical, df) < power:
        upper *= 2
    return float(optimize.brentq(lambda nc: _power(nc, critical, df) - power, 0.0, upper, xtol=1e-10) * se)


MOST_SEEDS = 100_000  # seeds_to_detect searches up to this many


def seeds_to_detect(difference: float, seed_variance: float, image_shared_variance: float, alpha: float,
                    power: float = POWER) -> float:
    """The fewest seeds (at least 2) at which a study on the same test set, with the same
    per-seed ``seed_variance`` and ``image_shared_variance`` (:func:`seeds_and_images`),
    detects a true ``difference`` with probability ``power`` at level ``alpha``
    (:func:`detectable_difference`). More seeds shrink only the seed part: where the test
    set's shared part alone keeps the difference out of reach, inf (more seeds cannot help;
    more test images can). NaN where the variances are unknown."""
    if any(np.isnan(v) for v in (difference, seed_variance, image_shared_variance)):
        return float("nan")
    target = abs(difference)

    def detectable(n_seeds: int) -> float:
        return detectable_difference(seed_variance, image_shared_variance, n_seeds, alpha, power)

    if detectable_difference(0.0, image_shared_variance, MOST_SEEDS, alpha, power) >= target:  # many seeds
        return float("inf")
    low, high = 1, 2  # detectable at high, not at low
    while detectable(high) > target:
        low, high = high, high * 2
        if high > MOST_SEEDS:
            return float("inf")
    while high - low > 1:
        middle = (low + high) // 2
        if detectable(middle) > target:
            low = middle
        else:
            high = middle
    return float(high)


# --- test-sample variation: metrics over a count matrix ---------------------------------------

def _ratio(numerator: np.ndarray, denominator: np.ndarray, empty: float) -> np.ndarray:
    """numerator / denominator, ``empty`` where the denominator is zero."""
    out = np.full(np.broadcast(numerator, denominator).shape, empty, dtype=float)
    return np.divide(numerator, denominator, out=out, where=denominator > 0)


def _confusions(y_true: np.ndarray, y_pred: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """Confusion matrices ``(B, k, k)`` (rows: true class, columns: predicted) of every resample."""
    n_rows = len(counts)
    cell = (np.arange(n_rows)[:, None] * k + y_true[None, :]) * k + y_pred[None, :]
    return np.bincount(cell.ravel(), weights=counts.ravel(), minlength=n_rows * k * k).reshape(n_rows, k, k)


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


def _mann_whitney_auc(scores: np.ndarray, is_positive: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUC-ROC of every resample: the share of (positive, negative) pairs ranked correctly, ties
    counting one half (the Mann-Whitney U statistic, which equals scikit-learn's ROC area).

    Resamples only repeat the original scores, so each row is counted over the ``V`` distinct
    scores (``(B, V)`` counts) instead of sorting every row.
    """
    values, value_of = np.unique(scores, return_inverse=True)
    n_rows, n_values = len(counts), len(values)
    cell = np.arange(n_rows)[:, None] * n_values + value_of[None, :]

    def per_value(mask: np.ndarray) -> np.ndarray:
        return np.bincount(cell[:, mask].ravel(), weights=counts[:, mask].ravel(),
                           minlength=n_rows * n_values).reshape(n_rows, n_values)

    positives, negatives = per_value(is_positive), per_value(~is_positive)
    negatives_below = np.cumsum(negatives, axis=1) - negatives
    pairs_won = (positives * (negatives_below + 0.5 * negatives)).sum(axis=1)
    return _ratio(pairs_won, positives.sum(axis=1) * negatives.sum(axis=1), np.nan)


def _auc(y_true: np.ndarray, probabilities: np.ndarray, counts: np.ndarray,
         positive: int | None) -> np.ndarray:
    """Binary: AUC of the positive column (column 1 without one). More classes: one-vs-rest
    macro average, as ``roc_auc_score(multi_class="ovr", average="macro")``; NaN for a resample
    where a class is missing."""
    k = probabilities.shape[1]
    if k == 2:
        column = positive_column(positive)
        return _mann_whitney_auc(probabilities[:, column], y_true == column, counts)
    per_class = [_mann_whitney_auc(probabilities[:, c], y_true == c, counts) for c in range(k)]
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
    """Metric ``name`` on every resample (row) of the index matrix ``indices``: an array ``(B,)``.

    The index form of :func:`counted_metric` (a row of image indices instead of image counts).
    On the identity resample (``np.arange(n)[None]``) each value equals scikit-learn's.
    """
    y_true = np.asarray(y_true)
    indices = np.atleast_2d(np.asarray(indices))
    return counted_metric(name, y_true, probabilities, _row_counts(indices, len(y_true)), positive)


def counted_metric(name: str, y_true: np.ndarray, probabilities: np.ndarray, counts: np.ndarray,
                   positive: int | None = None) -> np.ndarray:
    """Metric ``name`` on every resample (row) of ``counts`` (``(B, n)``: how often each test
    image is drawn, :func:`resample_counts`): an array ``(B,)``.

    ``name`` is one of :data:`METRICS`. Predictions are the argmax of ``probabilities``
    (``(n, k)``); ``y_true`` holds class indices. ``positive`` is the positive class's column
    (two classes only), needed for ``sensitivity`` (its recall) and ``specificity`` (the other
    class's recall), and used by binary ``auc``. On a row of ones each value equals
    scikit-learn's (macro averages with ``labels=range(k), zero_division=0``; balanced accuracy
    over the classes present); on any row, scikit-learn's on the images repeated that often.
    """
    y_true, probabilities = np.asarray(y_true), np.asarray(probabilities, dtype=float)
    counts = np.atleast_2d(np.asarray(counts))
    _check_inputs(name, y_true, probabilities, positive)
    if counts.shape[1] != len(y_true):
        raise ValueError(f"counts must have one column per test image ({len(y_true)}), got {counts.shape}")
    if name == "auc":
        return _auc(y_true, probabilities, counts, positive)
    k = probabilities.shape[1]
    confusion = _confusions(y_true, probabilities.argmax(axis=1), counts, k)
    return _confusion_metric(name, confusion, positive)


def per_seed_metric(name: str, y_true: np.ndarray, probabilities_per_seed: Sequence[np.ndarray],
                    counts: np.ndarray, positive: int | None) -> np.ndarray:
    """``(S, B)``: each seed's metric on every resample of ``counts`` (the same resamples for all)."""
    if len(probabilities_per_seed) == 0:
        raise ValueError("no seeds: probabilities_per_seed is empty")
    return np.array([counted_metric(name, y_true, p, counts, positive) for p in probabilities_per_seed])


class SharedBootstrap:
    """One test set's resamples (of images, or of ``groups`` drawn whole), shared by every
    configuration evaluated on it, so that any two configurations compare pairwise on the same
    resampled images."""

    def __init__(self, y_true: np.ndarray, resamples: int, seed: int, positive: int | None,
                 groups: np.ndarray | None = None):
        self.y_true, self.positive, self.seed, self.resamples = np.asarray(y_true), positive, seed, resamples
        self.counts = resample_counts(self.y_true, resamples, seed, groups)
        self.whole = np.ones((1, len(self.y_true)), dtype=np.int64)

    def per_seed(self, metric: str, probabilities: list[np.ndarray]) -> np.ndarray:
        """``(S, B)``: each seed's metric on every image resample."""
        return per_seed_metric(metric, self.y_true, probabilities, self.counts, self.positive)

    def per_seed_estimate(self, metric: str, probabilities: list[np.ndarray]) -> np.ndarray:
        """``(S,)``: each seed's metric on the whole test set."""
        return per_seed_metric(metric, self.y_true, probabilities, self.whole, self.positive)[:, 0]

    def resampled(self, metric: str, probabilities: list[np.ndarray]) -> np.ndarray:
        """The metric, averaged over the seeds' ``probabilities``, on every image resample
        (test-sample variation given these trained models)."""
        return self.per_seed(metric, probabilities).mean(axis=0)

    def estimate(self, metric: str, probabilities: list[np.ndarray]) -> float:
        """The metric, averaged over the seeds' ``probabilities``, on the whole test set."""
        return float(self.per_seed_estimate(metric, probabilities).mean())

    def seeds_and_images(self, per_seed: np.ndarray, per_seed_estimate: np.ndarray) -> dict:
        """:func:`seeds_and_images` of ``per_seed`` (``(S, B)``, on these resamples) and
        ``per_seed_estimate`` (``(S,)``, on the whole test set)."""
        return seeds_and_images(per_seed, per_seed_estimate)


def config_bootstrap(y_true: np.ndarray, probabilities_per_seed: Sequence[np.ndarray], metric: str,
                     n_resamples: int, seed: int, positive: int | None = None,
                     groups: np.ndarray | None = None) -> dict:
    """Estimate and 95% intervals of one configuration's metric.

    ``probabilities_per_seed``: one ``(n, k)`` array per trained seed, all on the same test set
    in the same order. ``estimate`` is the mean over seeds of the metric on the full test set.
    ``low``/``high``: the t-interval over seeds and test images (:func:`seeds_and_images`:
    training and test-sample variation, test images or ``groups`` drawn within strata).
    ``images_low``/``images_high``: the 2.5th/97.5th percentiles of the mean over seeds on the
    image resamples (test-sample variation given these trained models).
    """
    shared = SharedBootstrap(y_true, n_resamples, seed, positive, groups)
    probabilities = list(probabilities_per_seed)
    per_seed = shared.per_seed(metric, probabilities)
    both = seeds_and_images(per_seed, shared.per_seed_estimate(metric, probabilities))
    images_low, images_high = np.percentile(per_seed.mean(axis=0), [2.5, 97.5])
    return {"estimate": both["estimate"], "low": both["low"], "high": both["high"],
            "images_low": float(images_low), "images_high": float(images_high)}


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "no difference" from ``B`` resampled differences.

    ``min(1, 2 * (1 + b) / (B + 1))`` with ``b`` the number of resampled differences on the
    far side of zero from the majority (``min(#<= 0, #>= 0)``): the (b+1)/(B+1) form of Davison &
    Hinkley (1997, section 4.2) and Phipson & Smyth (2010), which counts the observed data as one
    of the resamples and so never gives 0; the smallest attainable value is ``2 / (B + 1)``. NaN
    when any difference is NaN.
    """
    differences = np.asarray(differences, dtype=float)
    if np.isnan(differences).any():
        return float("nan")
    far_side = min(np.sum(differences <= 0), np.sum(differences >= 0))
    return float(min(1.0, 2 * (1 + far_side) / (len(differences) + 1)))


def smallest_p_value(n_resamples: int) -> float:
    """The smallest p-value :func:`bootstrap_p_value` can give from ``n_resamples`` differences."""
    return 2 / (n_resamples + 1)


def resamples_for_family(configured: int, family_size: int, alpha: float) -> int:
    """Resamples enough for a family of ``family_size`` Holm-adjusted comparisons: the configured
    number, raised where needed so that the smallest attainable Holm-adjusted p
    (``family_size`` times :func:`smallest_p_value`) is at most half of ``alpha`` (so a comparison
    whose every resample favours one side is declared, with room to spare)."""
    needed = int(np.ceil(2 * family_size * 2 / alpha)) - 1
    return max(configured, needed)


def paired_bootstrap(y_true: np.ndarray, probs_a_per_seed: Sequence[np.ndarray],
                     probs_b_per_seed: Sequence[np.ndarray], metric: str, n_resamples: int, seed: int,
                     positive: int | None = None, groups: np.ndarray | None = None) -> dict:
    """Difference A - B of two configurations' metric (each averaged over its seeds) on the same
    test set, with a 95% interval and a two-sided p-value that cover training and test-sample
    variation (:func:`seeds_and_images` of the per-seed differences).

    The seeds are paired by position (the i-th of A and of B trained on the same split), so both
    lists must be equally long; A and B are evaluated on the same image resamples (test images
    or ``groups`` drawn within strata).
    """
    if len(probs_a_per_seed) != len(probs_b_per_seed):
        raise ValueError(f"seeds are paired by position: got {len(probs_a_per_seed)} and "
                         f"{len(probs_b_per_seed)} seeds")
    shared = SharedBootstrap(y_true, n_resamples, seed, positive, groups)
    a, b = list(probs_a_per_seed), list(probs_b_per_seed)
    result = seeds_and_images(shared.per_seed(metric, a) - shared.per_seed(metric, b),
                              shared.per_seed_estimate(metric, a) - shared.per_seed_estimate(metric, b))
    return {"difference": result["estimate"], "low": result["low"], "high": result["high"],
            "p_value": result["p_value"]}


def holm(p_values: Iterable[float | None]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down), in the input order.

    The i-th smallest of m p-values is multiplied by ``m - i + 1``, made non-decreasing in that
    order and capped at 1. None/NaN entries stay NaN and do not count in m. Kept here because
    scipy has no Holm (``false_discovery_control`` is BH/BY) and statsmodels is not a dependency.
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


def _confidence_bins(y_true: np.ndarray, probabilities: np.ndarray, n_bins: int):
    """The bins' edges, and per image its confidence, correctness (:func:`_top_label`) and bin.

    Equal-width bins over [0, 1]; bin i holds confidences in (i/n_bins, (i+1)/n_bins], the first
    bin also holds 0.
    """
    confidence, correct = _top_label(y_true, probabilities)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return edges, confidence, correct, np.digitize(confidence, edges[1:-1], right=True)


def _bin_sums(y_true: np.ndarray, probabilities: np.ndarray, n_bins: int):
    """Per confidence bin (:func:`_confidence_bins`): edges, image count, summed confidence,
    summed correctness."""
    edges, confidence, correct, bin_of = _confidence_bins(y_true, probabilities, n_bins)
    count = np.bincount(bin_of, minlength=n_bins)
    confidence_sum = np.bincount(bin_of, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(bin_of, weights=correct.astype(float), minlength=n_bins)
    return edges, count, confidence_sum, correct_sum


def expected_calibration_error(y_true: np.ndarray, probabilities: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Top-label ECE: sum over bins of (bin count / n) * |accuracy - mean confidence| in the bin.

    Confidence is the largest predicted probability, accuracy whether its class is the label;
    bins as in :func:`reliability_bins` (equal width, (low, high]). :func:`resampled_ece` on a
    row of ones, to rounding: this one sums each bin in image order (``np.bincount``), that one
    in a matrix product, and each order gives the numbers the study has published.
    """
    _, count, confidence_sum, correct_sum = _bin_sums(y_true, probabilities, n_bins)
    # (count/n) * |correct_sum/count - confidence_sum/count| = |correct_sum - confidence_sum| / n
    return float(np.abs(correct_sum - confidence_sum).sum() / count.sum())


def resampled_ece(y_true: np.ndarray, probabilities: np.ndarray, counts: np.ndarray,
                  n_bins: int = ECE_BINS) -> np.ndarray:
    """:func:`expected_calibration_error` on every resample (a row of the count matrix
    ``counts``, :func:`resample_counts`), at once: each resample's bin sums as one product
    with the images' one-hot bins."""
    _, confidence, correct, bin_of = _confidence_bins(y_true, probabilities, n_bins)
    in_bin = np.eye(n_bins)[bin_of]  # (n, n_bins)
    counts = np.atleast_2d(counts)
    gap = counts @ (in_bin * (correct.astype(float) - confidence)[:, None])
    return np.abs(gap).sum(axis=1) / counts.sum(axis=1)


def resampled_brier(y_true: np.ndarray, probabilities: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """:func:`brier_score` on every resample (a row of the count matrix ``counts``)."""
    counts = np.atleast_2d(counts)
    return counts @ _squared_errors(y_true, probabilities) / counts.sum(axis=1)


def calibration_slope_intercept(y_true: np.ndarray, probabilities: np.ndarray,
                                positive: int | None) -> tuple[float, float]:
    """Calibration slope and intercept (Cox 1958; Van Calster et al. 2019): the logistic fit,
    without penalty (scikit-learn), of the outcome on the predicted logit. Perfect
    calibration is slope 1, intercept 0; a slope below 1 means over-confident predictions.

    Two classes: the outcome is "the label is class ``positive``" (the second class when
    None) and the logit that of its probability. More classes: top-label, the outcome is
    "the most probable class is right" and the logit that of the largest probability.
    Probabilities are floored at :data:`PROBABILITY_FLOOR` from 0 and 1. NaN, NaN when the
    fit does not exist: one outcome only, or outcomes separated by the logit (the maximum
    likelihood slope is then infinite); and when it carries no information: the slope's
    standard error (observed Fisher information) above :data:`SLOPE_SE_LIMIT`, i.e. the fit
    cannot tell a calibrated model (slope 1) from one without discrimination (slope 0) within
    one standard error. That is the case of outcomes separated but for one or two images
    (a huge, unstable slope) and of logits of almost no spread (the same probability for all).
    """
    from sklearn.linear_model import LogisticRegression

    probabilities = np.asarray(probabilities, dtype=float)
    y_true = np.asarray(y_true)
    if probabilities.shape[1] == 2:
        column = positive_column(positive)
        p, outcome = probabilities[:, column], y_true == column
    else:
        p, outcome = _top_label(y_true, probabilities)
    p = np.clip(p, PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)
    logit = np.log(p) - np.log1p(-p)
    if outcome.all() or not outcome.any():
        return np.nan, np.nan
    if logit[outcome].min() > logit[~outcome].max() or logit[outcome].max() < logit[~outcome].min():
        return np.nan, np.nan
    # C = inf: no penalty; Newton-Cholesky: exact Newton steps, fast for one feature
    fit = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-10, max_iter=100).fit(logit[:, None], outcome)
    slope, intercept = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    if not _slope_standard_error(logit, intercept + slope * logit) <= SLOPE_SE_LIMIT:
        return np.nan, np.nan
    return slope, intercept


def _slope_standard_error(logit: np.ndarray, fitted: np.ndarray) -> float:
    """The slope's standard error of the logistic fit of an outcome on ``logit`` (fitted
    linear predictor ``fitted``): from the inverse observed Fisher information X' W X,
    W = p (1 - p). By hand: scikit-learn gives no standard errors, and statsmodels is not a
    dependency for two lines of algebra. Infinite where the information is singular."""
    p = special.expit(fitted)
    weights = p * (1.0 - p)
    design = np.column_stack([np.ones_like(logit), logit])
    information = design.T @ (design * weights[:, None])
    determinant = np.linalg.det(information)
    # the (slope, slope) entry of the inverse of a 2 x 2 matrix
    return float(np.sqrt(information[0, 0] / determinant)) if determinant > 0 else np.inf


def reliability_bins(y_true: np.ndarray, probabilities: np.ndarray, n_bins: int = ECE_BINS) -> list[dict]:
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
    :func:`resampled_brier` on a row of ones, to rounding (see :func:`expected_calibration_error`).
    """
    return float(_squared_errors(y_true, probabilities).mean())


def _squared_errors(y_true: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Per image: the sum over classes of (p - one-hot label)^2."""
    probabilities = np.asarray(probabilities, dtype=float)
    return ((probabilities - np.eye(probabilities.shape[1])[np.asarray(y_true)]) ** 2).sum(axis=1)


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
    :func:`floored_log` of probabilities, as :func:`apply_temperature` does.
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


def floored_log(probabilities: np.ndarray) -> np.ndarray:
    """log p with p floored at :data:`PROBABILITY_FLOOR`: what the temperature is fitted on
    and applied to."""
    return np.log(np.clip(np.asarray(probabilities, dtype=float), PROBABILITY_FLOOR, 1.0))


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities rescaled by T: softmax(log p / T), i.e. p^(1/T) renormalised per image,
    on the same floored log-probabilities (:func:`floored_log`) that :func:`fit_temperature`
    is given, so the fitted T is applied to what it was fitted on.

    Equals softmax(logits / T) for p = softmax(logits) wherever p is above the floor.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return special.softmax(floored_log(probabilities) / temperature, axis=1)
