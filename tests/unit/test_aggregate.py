"""The aggregate stage on hand-made finished runs: choice on validation, seed and
test-set intervals, paired comparisons with Holm, missing runs kept visible."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import fake_plan, fake_run
from scipy import stats

from scripts import stats as st
from scripts.aggregate import aggregate
from scripts.layout import RUN_FILES

CLASSES = ["a", "b", "c"]
LABELS = np.array([0] * 4 + [1] * 4 + [2] * 4)


def probabilities(correct: int, seed: int) -> np.ndarray:
    """Test probabilities whose first ``correct`` images of each class are right."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(3), len(LABELS)) * 0.5
    for i, label in enumerate(LABELS):
        right = (i % 4) < correct
        probs[i, label if right else (label + 1) % 3] += 0.5
    return probs


@pytest.fixture
def study(tmp_path):
    """Baseline (2 seeds), vgg16 frozen (2 seeds: best on validation, worse on test),
    vgg16 full (2 seeds: worse on validation, best on test), one vgg16 seed missing."""
    plan = fake_plan(tmp_path, CLASSES, [
        ("scratch_cnn", "scratch", "none", 1), ("scratch_cnn", "scratch", "none", 2),
        ("vgg16", "frozen", "imagenet", 1), ("vgg16", "frozen", "imagenet", 2),
        ("vgg16", "full", "imagenet", 1), ("vgg16", "full", "imagenet", 2),
        ("vgg16", "full", "imagenet", 3),
    ], resamples=500)
    quality = {("scratch_cnn", "scratch"): (2, 0.50), ("vgg16", "frozen"): (3, 0.90),
               ("vgg16", "full"): (4, 0.80)}
    for run in plan["runs"]:
        if run["seed"] == 3:
            continue  # did not finish
        correct, val_f1 = quality[run["model"], run["strategy"]]
        fake_run(run, RUN_FILES, CLASSES, LABELS, probabilities(correct, run["seed"]),
                 val_f1=val_f1 + run["seed"] / 100)
    return plan


def test_the_validation_metric_chooses_not_the_test_set(study):
    verdict = aggregate(study)["verdict"]["datasets"]["tiny"]
    assert verdict["selection_metric"] == "f1_macro"
    assert (verdict["chosen"]["model"], verdict["chosen"]["strategy"]) == ("vgg16", "frozen")
    assert verdict["chosen"]["val_f1_macro"] == pytest.approx(0.915)
    tables = aggregate(study)
    summary = tables["summary"].set_index("strategy")
    assert summary.loc["full", "accuracy"] > summary.loc["frozen", "accuracy"]  # full is best on test


def test_means_and_both_intervals(study):
    summary = aggregate(study)["summary"].set_index("strategy").loc["frozen"]
    per_seed = [np.mean(probabilities(3, s).argmax(1) == LABELS) for s in (1, 2)]
    mean, low, high, _ = st.t_interval(per_seed)
    assert summary["accuracy"] == pytest.approx(mean)
    assert (summary["accuracy_seed_low"], summary["accuracy_seed_high"]) == pytest.approx((low, high))
    half = stats.t.ppf(0.975, 1) * np.std(per_seed, ddof=1) / np.sqrt(2)
    assert high - low == pytest.approx(2 * half)
    expected = st.config_bootstrap(LABELS, [probabilities(3, s) for s in (1, 2)], "accuracy", 500, 0)
    assert (summary["accuracy_test_low"], summary["accuracy_test_high"]) == pytest.approx(
        (expected["low"], expected["high"]))
    assert summary["n_seeds"] == 2 and summary["accuracy_n"] == 2


def test_every_configuration_is_compared_with_the_baseline_with_holm(study):
    comparisons = aggregate(study)["comparisons"]
    accuracy = comparisons[comparisons["metric"] == "accuracy"].set_index("strategy")
    assert set(accuracy.index) == {"frozen", "full"}
    for strategy, correct in (("frozen", 3), ("full", 4)):
        expected = st.paired_bootstrap(LABELS, [probabilities(correct, s) for s in (1, 2)],
                                       [probabilities(2, s) for s in (1, 2)], "accuracy", 500, 0)
        row = accuracy.loc[strategy]
        assert row["difference"] == pytest.approx(expected["difference"])
        assert (row["low"], row["high"], row["p_value"]) == pytest.approx(
            (expected["low"], expected["high"], expected["p_value"]))
        assert row["n_pairs"] == 2
    assert list(accuracy["p_holm"]) == pytest.approx(list(st.holm(accuracy["p_value"])))


def test_missing_runs_are_listed_not_dropped(study):
    runs = aggregate(study)["runs"]
    missing = runs[runs["status"] == "missing"]
    assert list(zip(missing["strategy"], missing["seed"], strict=True)) == [("full", 3)]
    assert missing.iloc[0]["log_dir"].endswith("seed3")


def test_no_finished_run_still_aggregates(tmp_path):
    plan = fake_plan(tmp_path, CLASSES, [("scratch_cnn", "scratch", "none", 1)])
    tables = aggregate(plan)
    assert tables["summary"].empty and list(tables["runs"]["status"]) == ["missing"]
    assert tables["verdict"]["datasets"]["tiny"]["chosen"] is None and tables["verdict"]["finished"] == 0


def test_two_class_headline_is_sensitivity_and_specificity(tmp_path):
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    plan = fake_plan(tmp_path, ["NORMAL", "PNEUMONIA"], [("scratch_cnn", "scratch", "none", 1)],
                     positive_class="PNEUMONIA")
    probs = np.array([[.9, .1], [.8, .2], [.3, .7], [.2, .8], [.4, .6], [.6, .4], [.7, .3]])
    fake_run(plan["runs"][0], RUN_FILES, ["NORMAL", "PNEUMONIA"], labels, probs, val_f1=0.5)
    verdict = aggregate(plan)["verdict"]["datasets"]["tiny"]
    assert verdict["metrics"][-2:] == ["sensitivity", "specificity"]
    assert verdict["chosen"]["sensitivity"] == pytest.approx(2 / 4)  # PNEUMONIA recall
    assert verdict["chosen"]["specificity"] == pytest.approx(2 / 3)  # NORMAL recall


def test_seed_intervals_in_the_summary_stay_within_each_values_range(tmp_path):
    """Two seeds with sensitivity 1 and 0.75: the t-interval reaches 2.5; the summary's stops at 1."""
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    plan = fake_plan(tmp_path, ["NORMAL", "PNEUMONIA"], [("scratch_cnn", "scratch", "none", s) for s in (1, 2)],
                     positive_class="PNEUMONIA")
    right = np.eye(2)[labels] * 0.98 + 0.01
    one_missed = right.copy()
    one_missed[4] = [0.99, 0.01]
    for run, probs in zip(plan["runs"], (right, one_missed), strict=True):
        fake_run(run, RUN_FILES, ["NORMAL", "PNEUMONIA"], labels, probs, val_f1=0.5)
    summary = aggregate(plan)["summary"].iloc[0]
    assert st.t_interval([1.0, 0.75])[2] > 1
    assert summary["sensitivity"] == pytest.approx(0.875) and summary["sensitivity_seed_high"] == 1.0
    for column in [c for c in summary.index if c.endswith(("_seed_low", "_seed_high"))]:
        top = 2.0 if column.startswith("brier") else 100.0 if column.startswith("temperature") else 1.0
        assert 0 <= summary[column] <= top or np.isnan(summary[column]), column
    assert summary["ece_seed_low"] == 0.0  # ECE 0.01 and 0.13: the t-interval goes below 0

def test_the_baseline_is_the_scratch_cnn_trained_from_scratch_only():
    """Fails if a backbone trained from scratch counted as the baseline (it is compared with it)."""
    from scripts.comparisons import is_baseline

    assert is_baseline({"model": "scratch_cnn", "strategy": "scratch"})
    assert not is_baseline({"model": "vgg16", "strategy": "scratch"})


def test_csv_booleans_read_back_as_true_false_or_none():
    from scripts.run_tables import csv_boolean

    assert [csv_boolean(text) for text in ("True", "False", "")] == [True, False, None]
    with pytest.raises(KeyError):
        csv_boolean("yes")
