"""Test-set metrics from predicted probabilities (scikit-learn; no TensorFlow)."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def specificity(confusion: np.ndarray) -> np.ndarray:
    """Per class: true negatives / all negatives (one-vs-rest)."""
    total = confusion.sum()
    positives_pred = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    true_pos = np.diag(confusion)
    true_neg = total - actual - positives_pred + true_pos
    negatives = total - actual
    return np.divide(true_neg, negatives, out=np.full(len(actual), np.nan), where=negatives > 0)


def roc_auc(y_true: np.ndarray, probabilities: np.ndarray) -> float | None:
    """AUC-ROC; one-vs-rest macro average for more than two classes. None if undefined."""
    present = np.unique(y_true)
    n_classes = probabilities.shape[1]
    if len(present) < 2:
        return None
    if n_classes == 2:
        return float(skm.roc_auc_score(y_true, probabilities[:, 1]))
    if len(present) < n_classes:
        return None  # OvR AUC needs every class among the test labels
    return float(skm.roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro"))


def compute_metrics(y_true: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, precision, recall (sensitivity), specificity, F1, AUC and the confusion matrix."""
    labels = np.arange(len(classes))
    y_pred = probabilities.argmax(axis=1)
    confusion = skm.confusion_matrix(y_true, y_pred, labels=labels)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    spec = specificity(confusion)
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
    return {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "sensitivity_macro": float(recall.mean()),
        "specificity_macro": float(np.nanmean(spec)),
        "f1_macro": float(f1.mean()),
        "auc": roc_auc(y_true, probabilities),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "classes": list(classes),
    }

