"""From scores to a decision: ensembles, a threshold chosen on validation, net benefit
(numpy and scikit-learn only; no TensorFlow).

* :func:`out_of_bag_average`: an ensemble's validation probabilities when its members
  were validated on different images (every seed holds out its own validation set):
  each image is scored by the average of the members that held it out, so no member
  scores an image it trained on (Breiman's out-of-bag estimate). With one shared
  validation set it is the plain average.
* :func:`shared_average`: an ensemble's own validation probabilities: the average of every
  member on the validation images that every member held out.
* :func:`choose_threshold`: the threshold on the positive class's probability chosen on
  validation: for a sensitivity target, the validation positives' score of rank
  :func:`sensitivity_rank` from the bottom, so that the sensitivity on new images meets the
  target in expectation (the split-conformal order statistic); or the largest Youden's J
  from scikit-learn's ROC curve. An image is called positive when its score is at least the
  threshold. :func:`new_data_sensitivity`: the sensitivity such a threshold gives on new
  images, its expectation and a lower bound (Beta distribution of the conformal coverage).
* :func:`threshold_counts` and :func:`rates`: true/false positives and negatives at a
  threshold on every resample of the test images (as draw counts per image), summed over seeds, and sensitivity,
  specificity, PPV and NPV from them; :func:`predictive_values` moves PPV and NPV to
  another prevalence (Bayes' rule).
* :func:`net_benefit` and :func:`treat_all_benefit`: the decision curve of Vickers & Elkin
  (2006), NB(pt) = TP/n - FP/n * pt / (1 - pt).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats
from sklearn.metrics import roc_curve

RULES = ("sensitivity", "youden")
# The sensitivity on new images is above the reported bound with this probability.
NEW_DATA_LEVEL = 0.95
# Draws of the pooled sensitivity of several models on new images (a mean of Beta variables),
# from a fixed seed so that the report's numbers repeat.
NEW_DATA_DRAWS, NEW_DATA_SEED = 100_000, 0


def out_of_bag_average(members: Sequence[tuple[list[str], np.ndarray, np.ndarray]]
                       ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(paths, labels, probabilities)`` of an ensemble on validation, sorted by path: per
    image the mean probabilities of the ``members`` (each ``(paths, labels, probabilities)``)
    whose validation set holds it."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    sums, counts, labels = {}, {}, {}
    for paths, member_labels, probabilities in members:
        for path, label, row in zip(paths, member_labels, probabilities, strict=True):
            if labels.setdefault(path, label) != label:
                raise ValueError(f"validation image {path} has label {label} in one member, "
                                 f"{labels[path]} in another")
            sums[path] = sums.get(path, 0.0) + np.asarray(row, dtype=float)
            counts[path] = counts.get(path, 0) + 1
    paths = sorted(sums)
    k = np.asarray(members[0][2]).shape[1]
    probabilities = np.array([sums[p] / counts[p] for p in paths]).reshape(len(paths), k)
    return paths, np.array([labels[p] for p in paths], dtype=int), probabilities


def shared_average(members: Sequence[tuple[list[str], np.ndarray, np.ndarray]]
                   ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(paths, labels, probabilities)`` of an ensemble on the validation images that every
    member (each ``(paths, labels, probabilities)``) held out, sorted by path: the mean of
    all members' probabilities, the ensemble's own scores. Empty when no image is common."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    common = set(members[0][0]).intersection(*(set(paths) for paths, _, _ in members[1:]))
    paths = sorted(common)
    rows = [{path: i for i, path in enumerate(member_paths)} for member_paths, _, _ in members]
    k = np.asarray(members[0][2]).shape[1]
    probabilities = np.mean([np.asarray(member[2], dtype=float)[[row[p] for p in paths]].reshape(len(paths), k)
                             for member, row in zip(members, rows, strict=True)], axis=0)
    labels = np.asarray(members[0][1], dtype=int)[[rows[0][p] for p in paths]]
    for (_, member_labels, _), row in zip(members[1:], rows[1:], strict=True):
        differing = [p for p, label in zip(paths, labels, strict=True) if member_labels[row[p]] != label]
        if differing:
            raise ValueError(f"validation image {differing[0]} has two labels in the ensemble's members")
    return paths, labels, probabilities


def sensitivity_rank(n_positives: int, target: float) -> int:
    """The rank j (1 = lowest) of the validation positives' score taken as threshold for a
    sensitivity ``target``: the largest j with 1 - j/(n + 1) >= target, at least 1.

    A new positive's score is exchangeable with the n validation positives' scores, so it
    falls at or above the j-th lowest of them with probability 1 - j/(n + 1) (ties only raise
    it): the expected sensitivity on new images. With n + 1 < 1/(1 - target) no threshold at
    a validation score meets the target in expectation; j = 1 (the lowest positive) comes
    closest, and :func:`new_data_sensitivity` says by how much it falls short."""
    return max(1, math.floor((1 - target) * (n_positives + 1) + 1e-9))


def choose_threshold(is_positive: np.ndarray, scores: np.ndarray, rule: str, target: float) -> float:
    """The threshold on ``scores`` chosen on validation: ``sensitivity``: the positives' score
    of rank :func:`sensitivity_rank` from the bottom, the largest threshold whose sensitivity
    on new images is at least ``target`` in expectation (taking the largest threshold whose
    *validation* sensitivity is at least ``target`` falls short of it on new images: with 30
    positives and target 0.9 it expects 1 - 4/31 = 0.871); ``youden``: the one with the
    largest sensitivity + specificity - 1 (``target`` unused). It is one of the validation
    scores; positive means score >= threshold."""
    is_positive = np.asarray(is_positive, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    if is_positive.all() or not is_positive.any():
        raise ValueError("choosing a threshold needs validation images of both classes")
    if rule == "sensitivity":
        positives = np.sort(scores[is_positive])
        return float(positives[sensitivity_rank(len(positives), target) - 1])
    if rule == "youden":
        false_positive_rate, sensitivity, thresholds = roc_curve(is_positive, scores, drop_intermediate=False)
        index = int(np.argmax(sensitivity - false_positive_rate))
        return float(min(thresholds[index], np.max(scores)))  # roc_curve's first threshold is +inf
    raise ValueError(f"unknown operating-point rule {rule!r}; known: {', '.join(RULES)}")


def new_data_sensitivity(positives_per_model: Sequence[int], target: float, shared: bool = False,
                         level: float = NEW_DATA_LEVEL) -> tuple[float, float]:
    """Expected sensitivity on new images of models whose thresholds :func:`choose_threshold`
    chose for ``target`` on ``positives_per_model`` validation positives each, their test
    counts pooled (the mean of the models' sensitivities), and the bound it exceeds with
    probability ``level``. Given its validation set, a model's sensitivity on new images
    follows Beta(n + 1 - j, j) (j: :func:`sensitivity_rank`; Vovk 2012): exact for a single
    model; for several, the mean of independent draws where each was validated on its own
    images, and the mean of their quantiles where they ``shared`` one validation set (their
    draws then move together)."""
    ranks = [(n, sensitivity_rank(n, target)) for n in positives_per_model]
    expected = float(np.mean([1 - j / (n + 1) for n, j in ranks]))
    if len(ranks) == 1 or shared:
        return expected, float(np.mean([stats.beta.ppf(1 - level, n + 1 - j, j) for n, j in ranks]))
    rng = np.random.default_rng(NEW_DATA_SEED)
    pooled = np.mean([rng.beta(n + 1 - j, j, NEW_DATA_DRAWS) for n, j in ranks], axis=0)
    return expected, float(np.quantile(pooled, 1 - level))


def threshold_counts(is_positive: np.ndarray, scores_per_seed: Sequence[np.ndarray],
                     thresholds: Sequence[float], counts: np.ndarray) -> dict[str, np.ndarray]:
    """``tp``, ``fp``, ``tn``, ``fn`` on every resample, summed over the seeds, each seed's scores
    cut at its own threshold. ``counts``: ``(B, n)``, how often each image is drawn in each
    resample (a row of ones: the test set itself)."""
    is_positive = np.asarray(is_positive, dtype=bool)
    counts = np.atleast_2d(np.asarray(counts, dtype=float))
    totals = dict.fromkeys(("tp", "fp", "tn", "fn"), 0.0)
    for scores, threshold in zip(scores_per_seed, thresholds, strict=True):
        called = np.asarray(scores) >= threshold
        totals["tp"] = totals["tp"] + counts @ (called & is_positive)
        totals["fp"] = totals["fp"] + counts @ (called & ~is_positive)
        totals["tn"] = totals["tn"] + counts @ (~called & ~is_positive)
        totals["fn"] = totals["fn"] + counts @ (~called & is_positive)
    return totals


def _share(numerator, denominator) -> np.ndarray:
    numerator, denominator = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    return np.divide(numerator, denominator, out=out, where=denominator > 0)


def rates(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, PPV and NPV from :func:`threshold_counts` (NaN where the
    denominator is zero, e.g. no image called positive)."""
    tp, fp, tn, fn = (counts[k] for k in ("tp", "fp", "tn", "fn"))
    return {"sensitivity": _share(tp, tp + fn), "specificity": _share(tn, tn + fp),
            "ppv": _share(tp, tp + fp), "npv": _share(tn, tn + fn)}


def predictive_values(sensitivity, specificity, prevalence: float) -> dict[str, np.ndarray]:
    """PPV and NPV at ``prevalence`` for a test with this sensitivity and specificity."""
    sensitivity, specificity = np.asarray(sensitivity, dtype=float), np.asarray(specificity, dtype=float)
    true_positive, false_positive = sensitivity * prevalence, (1 - specificity) * (1 - prevalence)
    true_negative, false_negative = specificity * (1 - prevalence), (1 - sensitivity) * prevalence
    return {"ppv": _share(true_positive, true_positive + false_positive),
            "npv": _share(true_negative, true_negative + false_negative)}


def net_benefit(is_positive: np.ndarray, scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Net benefit at each threshold probability pt: treat when score >= pt; TP/n - FP/n * pt/(1 - pt)."""
    is_positive = np.asarray(is_positive, dtype=bool)
    thresholds = np.asarray(thresholds, dtype=float)
    called = np.asarray(scores)[None, :] >= thresholds[:, None]
    n = len(is_positive)
    true_pos = (called & is_positive).sum(axis=1) / n
    false_pos = (called & ~is_positive).sum(axis=1) / n
    return true_pos - false_pos * thresholds / (1 - thresholds)


def treat_all_benefit(prevalence: float, thresholds: np.ndarray) -> np.ndarray:
    """Net benefit of treating everyone: prevalence - (1 - prevalence) * pt/(1 - pt)."""
    thresholds = np.asarray(thresholds, dtype=float)
    return prevalence - (1 - prevalence) * thresholds / (1 - thresholds)
