"""From scores to a decision: ensembles, a threshold chosen on validation, net benefit
(numpy and scikit-learn only; no TensorFlow).

* :func:`out_of_bag_average`: an ensemble's validation probabilities when its members
  were validated on different images (every seed holds out its own validation set):
  each image is scored by the average of the members that held it out, so no member
  scores an image it trained on (Breiman's out-of-bag estimate). With one shared
  validation set it is the plain average.
* :func:`choose_threshold`: the threshold on the positive class's probability that meets a
  validation target (sensitivity at least ``target``, or the largest Youden's J), from
  scikit-learn's ROC curve (an image is called positive when its score is at least the
  threshold).
* :func:`threshold_counts` and :func:`rates`: true/false positives and negatives at a
  threshold on every resample of the test images (as draw counts per image), summed over seeds, and sensitivity,
  specificity, PPV and NPV from them; :func:`predictive_values` moves PPV and NPV to
  another prevalence (Bayes' rule).
* :func:`net_benefit` and :func:`treat_all_benefit`: the decision curve of Vickers & Elkin
  (2006), NB(pt) = TP/n - FP/n * pt / (1 - pt).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_curve

RULES = ("sensitivity", "youden")


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


def choose_threshold(is_positive: np.ndarray, scores: np.ndarray, rule: str, target: float) -> float:
    """The threshold on ``scores`` chosen on validation: ``sensitivity``: the largest one whose
    sensitivity is at least ``target`` (so the specificity is the largest that target allows);
    ``youden``: the one with the largest sensitivity + specificity - 1 (``target`` unused).
    It is one of the validation scores; positive means score >= threshold."""
    is_positive = np.asarray(is_positive, dtype=bool)
    if is_positive.all() or not is_positive.any():
        raise ValueError("choosing a threshold needs validation images of both classes")
    false_positive_rate, sensitivity, thresholds = roc_curve(is_positive, scores, drop_intermediate=False)
    if rule == "sensitivity":
        index = int(np.argmax(sensitivity >= target - 1e-12))  # thresholds fall: the first is the largest
    elif rule == "youden":
        index = int(np.argmax(sensitivity - false_positive_rate))
    else:
        raise ValueError(f"unknown operating-point rule {rule!r}; known: {', '.join(RULES)}")
    return float(min(thresholds[index], np.max(scores)))  # roc_curve's first threshold is +inf


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
