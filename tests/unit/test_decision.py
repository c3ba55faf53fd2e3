"""Ensembles, the validation-chosen operating point and net benefit, on predictions whose
answers are known by hand; and the same numbers through the aggregate stage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import fake_plan, fake_run
from sklearn.metrics import f1_score

from scripts.common.layout import RUN_FILES
from scripts.stats import decision as dc
from scripts.stats.aggregate import aggregate

CLASSES = ["NORMAL", "PNEUMONIA"]


def two_class(p_positive) -> np.ndarray:
    p_positive = np.asarray(p_positive, dtype=float)
    return np.column_stack([1 - p_positive, p_positive])


# --- the formulas ------------------------------------------------------------------------------

def test_out_of_bag_average_scores_each_image_by_the_members_that_held_it_out():
    seed1 = (["a", "b"], np.array([0, 1]), two_class([0.2, 0.6]))
    seed2 = (["b", "c"], np.array([1, 0]), two_class([0.8, 0.4]))
    paths, labels, probabilities = dc.out_of_bag_average([seed1, seed2])
    assert paths == ["a", "b", "c"] and list(labels) == [0, 1, 0]
    assert probabilities[:, 1] == pytest.approx([0.2, 0.7, 0.4])  # b: both held it out


def test_out_of_bag_average_refuses_two_labels_for_one_image():
    with pytest.raises(ValueError, match="validation image a"):
        dc.out_of_bag_average([(["a"], np.array([0]), two_class([0.2])), (["a"], np.array([1]), two_class([0.2]))])


def test_the_threshold_hits_the_validation_sensitivity_target_exactly():
    """10 positives scored 0.1..1.0: sensitivity >= 0.9 needs 9 of them, so the threshold is the
    9th largest positive score (0.2), the largest that keeps 9 of 10."""
    positives = np.round(np.arange(1, 11) / 10, 2)
    negatives = np.array([0.05, 0.15, 0.25, 0.35, 0.45])
    scores = np.concatenate([positives, negatives])
    is_positive = np.array([True] * 10 + [False] * 5)
    threshold = dc.choose_threshold(is_positive, scores, "sensitivity", 0.9)
    assert threshold == pytest.approx(0.2)
    measured = dc.rates(dc.threshold_counts(is_positive, [scores], [threshold], np.ones((1, 15))))
    assert measured["sensitivity"][0] == 0.9  # exactly the target
    assert measured["specificity"][0] == pytest.approx(2 / 5)  # 0.05 and 0.15 below 0.2


def test_youden_takes_the_threshold_with_the_largest_sensitivity_plus_specificity():
    # 0.5: sensitivity 3/4, specificity 4/4 (J = 0.75); 0.3: 4/4 and 2/4 (J = 0.5)
    scores = np.array([0.3, 0.5, 0.7, 0.9, 0.1, 0.2, 0.35, 0.4])
    is_positive = np.array([True] * 4 + [False] * 4)
    assert dc.choose_threshold(is_positive, scores, "youden", 0.9) == pytest.approx(0.5)


def test_a_threshold_needs_both_classes_and_a_known_rule():
    with pytest.raises(ValueError, match="both classes"):
        dc.choose_threshold(np.array([True, True]), np.array([0.2, 0.4]), "youden", 0.9)
    with pytest.raises(ValueError, match="unknown operating-point rule"):
        dc.choose_threshold(np.array([True, False]), np.array([0.2, 0.4]), "f1", 0.9)


def test_net_benefit_equals_the_formula_at_two_thresholds():
    is_positive = np.array([1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    scores = np.array([0.9, 0.6, 0.15, 0.7, 0.3, 0.25, 0.1, 0.05])
    # pt = 0.2: treated 0.9, 0.6, 0.7, 0.3, 0.25 -> TP 2, FP 3: 2/8 - 3/8 * 0.2/0.8
    # pt = 0.5: treated 0.9, 0.6, 0.7            -> TP 2, FP 1: 2/8 - 1/8 * 1
    benefit = dc.net_benefit(is_positive, scores, np.array([0.2, 0.5]))
    assert benefit == pytest.approx([2 / 8 - 3 / 8 * 0.25, 2 / 8 - 1 / 8])
    assert dc.treat_all_benefit(3 / 8, np.array([0.2, 0.5])) == pytest.approx([3 / 8 - 5 / 8 * 0.25, 3 / 8 - 5 / 8])


def test_counts_at_a_threshold_on_each_resample_weigh_each_image_by_its_draws():
    draws = np.array([[2, 0, 1], [0, 1, 2]])  # resample rows of image draw counts
    counted = dc.threshold_counts(np.array([True, False, True]), [np.array([0.9, 0.8, 0.1])], [0.5], draws)
    assert counted["tp"].tolist() == [2, 0] and counted["fp"].tolist() == [0, 1] and counted["fn"].tolist() == [1, 2]


def test_predictive_values_at_the_test_prevalence_equal_the_counted_ones():
    counts = {"tp": np.array([9]), "fn": np.array([1]), "tn": np.array([30]), "fp": np.array([10])}
    counted = dc.rates(counts)
    moved = dc.predictive_values(counted["sensitivity"], counted["specificity"], 10 / 50)
    assert moved["ppv"] == pytest.approx(counted["ppv"]) and moved["npv"] == pytest.approx(counted["npv"])
    rare = dc.predictive_values(0.9, 0.75, 0.01)  # PPV falls with the prevalence
    assert rare["ppv"] == pytest.approx(0.009 / (0.009 + 0.2475))


# --- through the aggregate stage ---------------------------------------------------------------

TEST_LABELS = np.array([0, 0, 1, 1])
# Each model is sure where it is right and unsure where it is wrong: averaged, both are right.
MODEL_A = two_class([0.1, 0.6, 0.9, 0.4])
MODEL_B = two_class([0.6, 0.1, 0.4, 0.9])


@pytest.fixture
def complementary(tmp_path):
    """Two configurations of one seed each, A (better on validation) and B, complementary."""
    plan = fake_plan(tmp_path, CLASSES, [("vgg16", "frozen", "imagenet", 1), ("vgg16", "full", "imagenet", 1)],
                     positive_class="PNEUMONIA")
    plan["config"]["decision"]["top_k"] = 2
    fake_run(plan["runs"][0], RUN_FILES, CLASSES, TEST_LABELS, MODEL_A, val_f1=0.9)
    fake_run(plan["runs"][1], RUN_FILES, CLASSES, TEST_LABELS, MODEL_B, val_f1=0.8)
    return plan


def test_an_ensemble_of_two_complementary_models_beats_both(complementary):
    tables = aggregate(complementary)
    verdict = tables["verdict"]["datasets"]["tiny"]
    assert verdict["chosen"]["strategy"] == "frozen"
    ensembles = tables["ensembles"].set_index("metric")
    assert set(ensembles["ensemble"]) == {"top-2 by validation"}  # one seed each: no seed ensembles
    assert ensembles.loc["accuracy", "value"] == 1.0
    summary = tables["summary"].set_index("strategy")
    assert summary.loc["frozen", "accuracy"] == 0.5 and summary.loc["full", "accuracy"] == 0.5
    assert ensembles.loc["accuracy", "difference"] == pytest.approx(0.5)  # against the chosen frozen
    assert ensembles.loc["accuracy", "best"] and verdict["decision"]["best"] == "top-2 by validation"


def test_the_operating_point_and_decision_curve_through_aggregate(complementary):
    tables = aggregate(complementary)
    point = tables["operating_point"]
    chosen = point[point["deployed"] == "chosen configuration"].set_index(["measure", "prevalence_of"])
    # A's validation positives score 0.9 and 0.4: sensitivity >= 0.9 needs both, threshold 0.4
    assert chosen["threshold"].iloc[0] == pytest.approx(0.4)
    assert chosen["val_sensitivity"].iloc[0] == 1.0
    # on test (the same images): scores >= 0.4 are 0.6, 0.9, 0.4 -> TP 2, FP 1, TN 1, FN 0
    assert chosen.loc[("sensitivity", "test"), "value"] == 1.0
    assert chosen.loc[("specificity", "test"), "value"] == 0.5
    assert chosen.loc[("ppv", "test"), "value"] == pytest.approx(2 / 3)
    assert chosen.loc[("npv", "test"), "prevalence"] == 0.5
    curve = tables["decision_curve"]
    at = curve[np.isclose(curve["threshold"], 0.5)].set_index("strategy")["net_benefit"]
    assert at["chosen configuration: vgg16 · frozen · weights imagenet"] == pytest.approx(1 / 4 - 1 / 4)
    assert at["best ensemble: top-2 by validation"] == pytest.approx(2 / 4)  # 0.65, 0.65 treated, both positive
    assert at["treat all"] == pytest.approx(0.5 - 0.5) and at["treat none"] == 0


def test_a_set_prevalence_moves_ppv_and_npv(complementary):
    complementary["config"]["decision"]["prevalence"] = 0.1
    point = aggregate(complementary)["operating_point"]
    chosen = point[point["deployed"] == "chosen configuration"].set_index(["measure", "prevalence_of"])
    expected = dc.predictive_values(1.0, 0.5, 0.1)
    assert chosen.loc[("ppv", "set"), "value"] == pytest.approx(float(expected["ppv"]))
    assert chosen.loc[("ppv", "set"), "prevalence"] == 0.1


def test_seed_ensembles_and_top_k_switch_off(complementary):
    complementary["config"]["decision"].update(top_k=0, seed_ensembles=False)
    tables = aggregate(complementary)
    assert tables["ensembles"].empty
    assert set(tables["operating_point"]["deployed"]) == {"chosen configuration"}


def test_more_classes_use_argmax_and_say_why(tmp_path):
    labels = np.array([0, 1, 2, 0, 1, 2])
    plan = fake_plan(tmp_path, ["a", "b", "c"],
                     [("vgg16", "frozen", "imagenet", 1), ("vgg16", "frozen", "imagenet", 2)])
    for run in plan["runs"]:
        fake_run(run, RUN_FILES, ["a", "b", "c"], labels, np.eye(3)[labels] * 0.7 + 0.1, val_f1=0.5)
    tables = aggregate(plan)
    decision = tables["verdict"]["datasets"]["tiny"]["decision"]
    assert not decision["two_class"] and "argmax" in decision["argmax_reason"]
    assert tables["operating_point"].empty and tables["decision_curve"].empty
    assert set(tables["ensembles"]["kind"]) == {"seeds"}
    assert isinstance(tables["ensembles"], pd.DataFrame)


def test_the_report_shows_the_ensembles_the_operating_point_and_the_decision_curve(complementary, tmp_path):
    from scripts import stages
    from scripts.common import fsutil
    from scripts.common.layout import TABLES

    plan_path = tmp_path / "plan.json"
    fsutil.write_json(plan_path, complementary)
    tables = {name: str(tmp_path / path) for name, path in TABLES.items()}
    stages.aggregate(str(plan_path), tables)
    stages.report(str(plan_path), tables, str(tmp_path / "report.html"))
    html = (tmp_path / "report.html").read_text()
    assert 'id="ensembles-1"' in html and "top-2 by validation <strong>(best ensemble)</strong>" in html
    assert 'id="operating-point-1"' in html and "chosen configuration: vgg16 · frozen · weights imagenet" in html
    assert 'alt="decision curve"' in html and "Prevalence of PNEUMONIA: training" in html


def test_ensembles_are_scored_on_their_own_validation_images_not_the_test_set_size(complementary):
    """Seed 1 held out six validation images, none of them a test image: A scores them all
    right and B none, so the top-2 ensemble's out-of-bag macro-F1 is that of their mean."""
    labels = np.array([0, 0, 0, 1, 1, 1])
    a, b = two_class([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]), two_class([0.95, 0.9, 0.85, 0.05, 0.1, 0.15])
    for run, probabilities in zip(complementary["runs"], (a, b), strict=True):
        frame = pd.DataFrame({"path": [f"val/{i}.png" for i in range(6)], "label": [CLASSES[i] for i in labels],
                              "predicted": [CLASSES[i] for i in probabilities.argmax(1)]})
        frame["p_NORMAL"], frame["p_PNEUMONIA"] = probabilities[:, 0], probabilities[:, 1]
        frame.to_csv(f"{run['dir']}/{RUN_FILES['val_predictions']}", index=False)
    ensembles = aggregate(complementary)["ensembles"]
    mean = (a + b) / 2  # positive: 0.525, 0.55, 0.575, 0.375, 0.45, 0.525 -> no negative and 1 of 3 positives right
    assert ensembles["val_value"].iloc[0] == pytest.approx(f1_score(labels, mean.argmax(1), average="macro"))
    assert ensembles["n_val"].iloc[0] == 6
