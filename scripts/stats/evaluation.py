"""Test-set metrics from predicted probabilities (scikit-learn; no TensorFlow).

Two-class studies name a positive class (e.g. PNEUMONIA): sensitivity is the recall of that
class and specificity the recall of the other one. Studies with more classes report one-vs-rest
macro averages only (``recall_macro``, ``specificity_macro``, ...), since a single
"sensitivity" has no meaning there; per-class figures are always in ``per_class``.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from scripts.stats.stats import positive_column


def per_class_specificity(y_true: np.ndarray, y_pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per class, one-vs-rest: true negatives / (true negatives + false positives).

    NaN for a class without negatives (every test image belongs to it).
    """
    # Each 2x2 matrix is [[TN, FP], [FN, TP]] for "this class" vs "every other class".
    one_vs_rest = skm.multilabel_confusion_matrix(y_true, y_pred, labels=labels)
    true_neg, false_pos = one_vs_rest[:, 0, 0], one_vs_rest[:, 0, 1]
    negatives = true_neg + false_pos
    return np.divide(true_neg, negatives, out=np.full(len(labels), np.nan), where=negatives > 0)


def roc_auc(y_true: np.ndarray, probabilities: np.ndarray, positive: int = 1) -> float | None:
    """AUC-ROC; one-vs-rest macro average for more than two classes. None if undefined.

    Two classes: the positive class's probability column ranks the images (with probabilities
    that sum to one the value does not depend on which class is called positive).
    """
    present = np.unique(y_true)
    n_classes = probabilities.shape[1]
    if len(present) < 2:
        return None
    if n_classes == 2:
        return float(skm.roc_auc_score(y_true == positive, probabilities[:, positive]))
    if len(present) < n_classes:
        return None  # OvR AUC needs every class among the test labels
    return float(skm.roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro"))


def positive_index(classes: list[str], positive_class: str | None) -> int | None:
    """Column of the positive class; ValueError if it is not a class or there are not two classes."""
    if positive_class is None:
        return None
    if positive_class not in classes:
        raise ValueError(f"positive_class {positive_class!r} is not one of the classes {list(classes)}")
    if len(classes) != 2:
        raise ValueError(f"positive_class {positive_class!r} needs exactly two classes, got {list(classes)}")
    return list(classes).index(positive_class)


def compute_metrics(y_true: np.ndarray, probabilities: np.ndarray, classes: list[str],
                    positive_class: str | None = None) -> dict:
    """Accuracy, macro and per-class precision/recall/specificity/F1, AUC, confusion matrix.

    With ``positive_class`` (two classes only) also ``sensitivity`` (recall of the positive
    class) and ``specificity`` (recall of the other class).
    """
    positive = positive_index(classes, positive_class)
    labels = np.arange(len(classes))
    y_pred = probabilities.argmax(axis=1)
    confusion = skm.confusion_matrix(y_true, y_pred, labels=labels)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    spec = per_class_specificity(y_true, y_pred, labels)
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "specificity": float(spec[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
    metrics = {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "specificity_macro": float(np.nanmean(spec)),
        "f1_macro": float(f1.mean()),
        "auc": roc_auc(y_true, probabilities, positive_column(positive)),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "classes": list(classes),
    }
    if positive is not None:
        negative = 1 - positive
        metrics.update(positive_class=positive_class, sensitivity=float(recall[positive]),
                       specificity=float(recall[negative]))
    return metrics
