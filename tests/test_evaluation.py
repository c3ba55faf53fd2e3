"""Metrics against hand-computed values and scikit-learn's definitions."""

from __future__ import annotations

import numpy as np
import pytest

from scripts.evaluation import compute_metrics, specificity


def test_three_class_metrics_by_hand():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    probs = np.array([[.8, .1, .1], [.6, .3, .1], [.2, .7, .1], [.1, .8, .1], [.5, .4, .1], [.1, .2, .7]])
    m = compute_metrics(y_true, probs, ["a", "b", "c"])
    assert m["confusion_matrix"] == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["a"]["recall"] == pytest.approx(2 / 3)
    assert m["per_class"]["a"]["specificity"] == pytest.approx(2 / 3)  # TN 2 of 3 negatives
    assert m["per_class"]["c"]["specificity"] == pytest.approx(1.0)
    assert m["per_class"]["b"]["precision"] == pytest.approx(0.5)
    assert 0 < m["auc"] <= 1
    assert m["sensitivity_macro"] == m["recall_macro"]


def test_binary_auc_uses_positive_class_and_perfect_separation():
    y_true = np.array([0, 0, 1, 1])
    probs = np.array([[.9, .1], [.6, .4], [.3, .7], [.2, .8]])
    m = compute_metrics(y_true, probs, ["normal", "pneumonia"])
    assert m["auc"] == 1.0 and m["accuracy"] == 1.0


def test_auc_undefined_when_a_class_is_absent_from_test():
    y_true = np.array([0, 0, 1])
    probs = np.full((3, 3), 1 / 3)
    assert compute_metrics(y_true, probs, ["a", "b", "c"])["auc"] is None


def test_specificity_handles_a_class_with_no_negatives():
    assert np.isnan(specificity(np.array([[3]])))[0]
