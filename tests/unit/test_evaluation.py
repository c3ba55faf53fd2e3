"""Metrics against hand-computed confusion matrices and Mann-Whitney counts."""

from __future__ import annotations

import numpy as np
import pytest

from scripts.stats.evaluation import compute_metrics, per_class_specificity

THREE_CLASS_Y = np.array([0, 0, 0, 1, 1, 2])
THREE_CLASS_P = np.array([[.8, .1, .1], [.6, .3, .1], [.2, .7, .1], [.1, .8, .1], [.5, .4, .1], [.1, .2, .7]])


def images_with_confusion(confusion: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and two-class probabilities whose argmax gives exactly ``confusion``."""
    y_true, probs = [], []
    for true in (0, 1):
        for predicted in (0, 1):
            count = confusion[true][predicted]
            y_true += [true] * count
            probs += [[0.8, 0.2] if predicted == 0 else [0.3, 0.7]] * count
    return np.array(y_true), np.array(probs)


def test_three_class_metrics_by_hand():
    m = compute_metrics(THREE_CLASS_Y, THREE_CLASS_P, ["a", "b", "c"])
    assert m["confusion_matrix"] == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["a"]["recall"] == pytest.approx(2 / 3)
    assert m["per_class"]["a"]["specificity"] == pytest.approx(2 / 3)  # TN 2 of 3 negatives
    assert m["per_class"]["b"]["specificity"] == pytest.approx(3 / 4)  # FP 1 (an "a" called "b")
    assert m["per_class"]["c"]["specificity"] == pytest.approx(1.0)
    assert m["per_class"]["b"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["a"]["support"] == 3
    assert m["recall_macro"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["specificity_macro"] == pytest.approx((2 / 3 + 3 / 4 + 1) / 3)
    # precision a 2/3, b 1/2, c 1; F1 = 2PR/(P+R): a 2/3, b 1/2, c 1
    assert m["f1_macro"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)


def test_more_than_two_classes_report_no_single_sensitivity():
    m = compute_metrics(THREE_CLASS_Y, THREE_CLASS_P, ["a", "b", "c"])
    assert "sensitivity" not in m and "specificity" not in m and "sensitivity_macro" not in m


def test_three_class_auc_is_the_mean_of_one_vs_rest_mann_whitney_counts():
    # Pairs (positive, negative) where the positive scores higher, ties count one half:
    # a: column 0, positives .8 .6 .2 vs negatives .1 .5 .1 -> 3 + 3 + 2 = 8 of 9
    # b: column 1, positives .8 .4 vs negatives .1 .3 .7 .2 -> 4 + 3 = 7 of 8
    # c: column 2, positive .7 vs five .1 -> 5 of 5
    m = compute_metrics(THREE_CLASS_Y, THREE_CLASS_P, ["a", "b", "c"])
    assert m["auc"] == pytest.approx((8 / 9 + 7 / 8 + 1) / 3)


def test_sensitivity_and_specificity_are_the_two_class_recalls_not_balanced_accuracy():
    # NORMAL 234 (224 right, 10 called pneumonia), PNEUMONIA 390 (330 right, 60 called normal)
    y_true, probs = images_with_confusion([[224, 10], [60, 330]])
    m = compute_metrics(y_true, probs, ["NORMAL", "PNEUMONIA"], positive_class="PNEUMONIA")
    assert m["confusion_matrix"] == [[224, 10], [60, 330]]
    assert m["sensitivity"] == pytest.approx(330 / 390)  # 0.846, not balanced accuracy 0.902
    assert m["specificity"] == pytest.approx(224 / 234)  # 0.957
    assert m["positive_class"] == "PNEUMONIA"
    assert m["balanced_accuracy"] == pytest.approx((330 / 390 + 224 / 234) / 2)
    assert m["accuracy"] == pytest.approx(554 / 624)
    assert m["per_class"]["PNEUMONIA"]["precision"] == pytest.approx(330 / 340)
    assert m["per_class"]["NORMAL"]["precision"] == pytest.approx(224 / 284)
    assert m["per_class"]["NORMAL"]["specificity"] == pytest.approx(330 / 390)


def test_positive_class_normal_swaps_sensitivity_and_specificity():
    y_true, probs = images_with_confusion([[224, 10], [60, 330]])
    m = compute_metrics(y_true, probs, ["NORMAL", "PNEUMONIA"], positive_class="NORMAL")
    assert m["sensitivity"] == pytest.approx(224 / 234)
    assert m["specificity"] == pytest.approx(330 / 390)


def test_binary_auc_is_the_mann_whitney_count_of_the_positive_column():
    # positives (class 1) score .8 and .4; negatives .1 .4 .35 (column 1)
    # .8 beats all 3; .4 beats .1 and .35 and ties .4 (one half) -> 5.5 of 6 pairs
    y_true = np.array([0, 0, 0, 1, 1])
    p1 = np.array([.1, .4, .35, .8, .4])
    probs = np.column_stack([1 - p1, p1])
    assert compute_metrics(y_true, probs, ["n", "p"], positive_class="p")["auc"] == pytest.approx(5.5 / 6)
    # Column 0 ranks class 0 against class 1 with the same pair counts.
    assert compute_metrics(y_true, probs, ["n", "p"], positive_class="n")["auc"] == pytest.approx(5.5 / 6)


def test_binary_auc_follows_the_positive_column_when_columns_do_not_mirror():
    # Scores that do not sum to one: column 0 ranks perfectly, column 1 is backwards.
    y_true = np.array([0, 0, 1, 1])
    probs = np.array([[.9, .9], [.8, .8], [.1, .1], [.2, .2]])
    assert compute_metrics(y_true, probs, ["n", "p"], positive_class="n")["auc"] == 1.0
    assert compute_metrics(y_true, probs, ["n", "p"], positive_class="p")["auc"] == 0.0


def test_unknown_positive_class_is_named_in_the_error():
    with pytest.raises(ValueError, match="'COVID'"):
        compute_metrics(np.array([0, 1]), np.eye(2), ["NORMAL", "PNEUMONIA"], positive_class="COVID")


def test_positive_class_needs_two_classes():
    with pytest.raises(ValueError, match="two classes"):
        compute_metrics(THREE_CLASS_Y, THREE_CLASS_P, ["a", "b", "c"], positive_class="a")


def test_auc_undefined_when_a_class_is_absent_from_test():
    y_true = np.array([0, 0, 1])
    probs = np.full((3, 3), 1 / 3)
    assert compute_metrics(y_true, probs, ["a", "b", "c"])["auc"] is None


def test_specificity_is_nan_for_a_class_with_no_negatives():
    spec = per_class_specificity(np.array([0, 0]), np.array([0, 1]), np.array([0, 1]))
    assert np.isnan(spec[0]) and spec[1] == pytest.approx(1 / 2)  # class 1: TN 1 of 2 negatives
