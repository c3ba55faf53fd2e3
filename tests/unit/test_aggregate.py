"""The aggregate stage on hand-made finished runs: choice on validation, seed and
test-set intervals, paired comparisons with Holm, missing runs kept visible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import fake_plan, fake_run
from scipy import stats

from scripts.common.layout import RUN_FILES
from scripts.stats import stats as st
from scripts.stats.aggregate import aggregate
from scripts.stats.comparisons import COMPARISON_COLUMNS

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
        (expected["images_low"], expected["images_high"]))
    # two seeds: a t on 1 degree of freedom reaches past [0, 1], where the interval is clipped
    assert expected["low"] < 0 and expected["high"] > 1
    assert (summary["accuracy_seeds_images_low"], summary["accuracy_seeds_images_high"]) == (0.0, 1.0)
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
    from scripts.stats.comparisons import is_baseline

    assert is_baseline({"model": "scratch_cnn", "strategy": "scratch"})
    assert not is_baseline({"model": "vgg16", "strategy": "scratch"})


def test_the_test_images_patients_are_read_from_the_split_in_the_order_asked(tmp_path):
    """For a bootstrap that draws patients whole; None where no groups are declared."""
    from scripts.stats.run_tables import read_test_groups

    split = pd.DataFrame({"path": ["train/a/1.png", "test/a/2.png", "test/b/3.png", "test/b/4.png"],
                          "subset": ["train", "test", "test", "dropped"], "group": ["p1", "p1", "p2", "p3"]})
    split.to_csv(tmp_path / "grouped.csv", index=False)
    assert list(read_test_groups(str(tmp_path / "grouped.csv"), ["test/b/3.png", "test/a/2.png"])) == ["p2", "p1"]
    split.assign(group="").to_csv(tmp_path / "ungrouped.csv", index=False)
    assert read_test_groups(str(tmp_path / "ungrouped.csv"), ["test/a/2.png"]) is None


def test_csv_booleans_read_back_as_true_false_or_none():
    from scripts.stats.run_tables import csv_boolean

    assert [csv_boolean(text) for text in ("True", "False", "")] == [True, False, None]
    with pytest.raises(KeyError):
        csv_boolean("yes")


def test_the_prespecified_comparison_stands_alone_and_the_rest_are_holm_adjusted(study):
    comparisons = aggregate(study)["comparisons"]
    f1 = comparisons[comparisons["metric"] == "f1_macro"].set_index("strategy")
    # vgg16 frozen is chosen on validation: its f1 (the selection metric) comparison is prespecified
    assert f1.loc["frozen", "family"] == "prespecified" and f1.loc["frozen", "family_size"] == 1
    assert f1.loc["frozen", "p_holm"] == f1.loc["frozen", "p_value"]
    assert f1.loc["full", "family"] == "baseline" and f1.loc["full", "family_size"] == 1
    assert f1.loc["full", "p_holm"] == f1.loc["full", "p_value"]  # a family of one once the chosen is left out
    accuracy = comparisons[comparisons["metric"] == "accuracy"]
    assert set(accuracy["family"]) == {"baseline"} and set(accuracy["family_size"]) == {2}
    assert list(comparisons.columns) == COMPARISON_COLUMNS


def binary_study(tmp_path, accuracies: dict, resamples: int = 400) -> dict:
    """624 binary test images (234 NORMAL, 390 PNEUMONIA); per (model, strategy) one test
    accuracy per seed, each seed wrong on its own random images; vgg16 frozen best on validation."""
    labels = np.repeat([0, 1], [234, 390])
    runs = [(model, strategy, "none" if strategy == "scratch" else "imagenet", seed)
            for (model, strategy), per_seed in accuracies.items() for seed in range(1, len(per_seed) + 1)]
    plan = fake_plan(tmp_path, ["NORMAL", "PNEUMONIA"], runs, resamples=resamples, positive_class="PNEUMONIA")
    rng = np.random.default_rng(0)
    for run in plan["runs"]:
        accuracy = accuracies[run["model"], run["strategy"]][run["seed"] - 1]
        wrong = np.zeros(len(labels), dtype=bool)
        wrong[rng.choice(len(labels), round((1 - accuracy) * len(labels)), replace=False)] = True
        probs = np.eye(2)[np.where(wrong, 1 - labels, labels)] * 0.8 + 0.1
        fake_run(run, RUN_FILES, ["NORMAL", "PNEUMONIA"], labels, probs,
                 val_f1=0.9 if run["model"] == "vgg16" else 0.5)
    return plan


def test_two_seeds_of_which_one_loses_make_no_claim(tmp_path):
    """2 seeds at 0.96 and 0.84 against a baseline at 0.85 and 0.85.
    Drawing the test images alone gave p = 0.001 and "beats", although one seed loses."""
    tables = aggregate(binary_study(tmp_path, {("scratch_cnn", "scratch"): (0.85, 0.85),
                                               ("vgg16", "frozen"): (0.96, 0.84)}))
    row = tables["comparisons"].set_index("metric").loc["accuracy"]
    assert row["difference"] == pytest.approx(0.05, abs=0.002) and row["n_pairs"] == 2
    assert row["p_value"] > 0.2 and row["low"] < 0 < row["high"]  # seeds drawn: one loses
    verdict = tables["verdict"]["datasets"]["tiny"]
    assert verdict["claim"] == "too few seeds" and verdict["prespecified"]["metric"] == "f1_macro"
    assert verdict["min_seeds"] == 3
    assert tables["learning_curve"].set_index("model").loc["vgg16", "beats"] == False  # noqa: E712


def test_three_seeds_that_all_win_beat_the_baseline(tmp_path):
    tables = aggregate(binary_study(tmp_path, {("scratch_cnn", "scratch"): (0.85, 0.85, 0.86),
                                               ("vgg16", "frozen"): (0.96, 0.95, 0.96)}))
    verdict = tables["verdict"]["datasets"]["tiny"]
    assert verdict["claim"] == "beats" and verdict["prespecified"]["n_pairs"] == 3
    assert verdict["prespecified"]["p_value"] < 0.01  # a t over 3 seeds that all win by 0.10-0.11
    assert tables["learning_curve"].set_index("model").loc["vgg16", "beats"] == True  # noqa: E712


def test_no_significant_difference_comes_with_what_the_study_could_detect(tmp_path):
    """Per-seed accuracy differences -0.01, +0.03, +0.02 on 624 test images: no claim; the
    prespecified comparison states the difference it could detect at 0.05 and the seeds
    that would detect the meaningful difference."""
    study = binary_study(tmp_path, {("scratch_cnn", "scratch"): (0.85, 0.85, 0.85),
                                    ("vgg16", "frozen"): (0.84, 0.88, 0.87)})
    study["config"]["evaluation"]["meaningful_difference"] = 0.02
    tables = aggregate(study)
    verdict = tables["verdict"]["datasets"]["tiny"]
    assert verdict["claim"] == "no significant difference" and verdict["meaningful_difference"] == 0.02
    prespecified = verdict["prespecified"]
    assert prespecified["alpha"] == 0.05 and prespecified["detectable"] > abs(prespecified["difference"])
    assert st.detectable_difference(prespecified["seed_variance"], prespecified["image_shared_variance"],
                                    prespecified["n_pairs"], 0.05) == prespecified["detectable"]
    assert prespecified["seeds_needed"] > 3
    import html as html_module
    import json

    from scripts.report import report

    report.render(study, {**tables, "verdict": json.loads(json.dumps(tables["verdict"]))}, tmp_path / "r.html")
    page = html_module.unescape((tmp_path / "r.html").read_text())
    first_screen = page.split('id="decision-claim-1"')[1].split("</p>")[0]
    said = (f"no significant difference (which does not show that they are equal); this study could detect "
            f"differences ≥ {prespecified['detectable']:.3f} (80% power at α 0.05); "
            f"{prespecified['seeds_needed']:.0f} seeds would detect 0.02.")
    assert said in first_screen and said in page.split('id="prespecified-1"')[1].split("</p>")[0]


def test_resamples_are_raised_for_a_large_family_and_the_verdict_says_so(tmp_path, monkeypatch):
    import scripts.stats.aggregate as aggregate_module

    monkeypatch.setattr(aggregate_module, "largest_family", lambda configs: 52)
    study = binary_study(tmp_path, {("scratch_cnn", "scratch"): (0.85,), ("vgg16", "frozen"): (0.9,)}, resamples=1000)
    tables = aggregate(study)
    bootstrap = tables["verdict"]["datasets"]["tiny"]["bootstrap"]
    assert bootstrap["configured"] == 1000 and bootstrap["resamples"] == st.resamples_for_family(1000, 52, 0.05)
    assert bootstrap["smallest_holm_p"] <= 0.025 and bootstrap["largest_family"] == 52


def test_the_report_names_each_family_as_the_code_computes_it_and_claims_nothing_from_two_seeds(tmp_path):
    import html as html_module
    import json

    from scripts.report import report
    from scripts.stats.comparisons import FAMILIES

    plan = binary_study(tmp_path, {("scratch_cnn", "scratch"): (0.85, 0.85), ("vgg16", "frozen"): (0.96, 0.84)},
                        resamples=200)
    tables = aggregate(plan)
    report.render(plan, {**tables, "verdict": json.loads(json.dumps(tables["verdict"]))}, tmp_path / "r.html")
    page = html_module.unescape((tmp_path / "r.html").read_text())
    for description in FAMILIES.values():  # the page's words are the code's
        assert description in page
    assert "across all configurations compared with the baseline on a dataset" not in page
    prespecified = page.split('id="prespecified-1"')[1].split("</p>")[0]
    assert "over 2 paired seeds" in prespecified
    assert "no claim</strong>: a claim needs at least 3 seeds paired with the baseline" in prespecified
    assert "it beats the baseline" not in page
    first_screen = page.split('id="decision-claim-1"')[1].split("</p>")[0]
    assert "over 2 paired seeds" in first_screen and "no claim</strong>" in first_screen
    assert "95% interval over seeds and test images" in page and "prespecified (1)" in page


def test_a_dataset_with_patients_draws_them_whole_in_its_test_bootstrap(tmp_path):
    """Errors clustered by patient (8 images each): the interval that draws patients whole is
    wider than the one that draws images, which treats the 8 as independent; so is the
    internal test set's interval beside an external test (the same task, mapped)."""
    def accuracy_intervals(grouped: bool) -> tuple[float, float]:
        root = tmp_path / ("grouped" if grouped else "images")
        labels = np.repeat([0, 1], [240, 240])
        patients = np.arange(len(labels)) // 8
        plan = fake_plan(root, ["NORMAL", "PNEUMONIA"], [("scratch_cnn", "scratch", "none", s) for s in (1, 2, 3)],
                         resamples=400, positive_class="PNEUMONIA")
        paths = [f"test/{'NP'[labels[i]]}/p{patients[i]}_{i}.png" for i in range(len(labels))]
        if grouped:
            plan["config"]["datasets"]["tiny"]["groups"] = {"pattern": r"^p\d+"}
        split = Path(plan["datasets"]["tiny"]["split"])
        split.parent.mkdir(parents=True)
        pd.DataFrame({"path": paths, "subset": "test",
                      "group": [f"p{p}" for p in patients] if grouped else ""}).to_csv(split, index=False)
        overlap = root / "overlap.csv"
        pd.DataFrame({"path": ["ext/a.png", "ext/b.png"], "near_duplicate": False}).to_csv(overlap, index=False)
        plan["config"]["datasets"]["tiny"]["external_tests"] = [
            {"dataset": "other", "class_map": {"NORMAL": "NORMAL", "PNEUMONIA": "PNEUMONIA"},
             "near_duplicates": "exclude"}]
        plan["datasets"]["tiny"]["external"] = {"other": {"overlap": str(overlap), "verify": str(root / "v.json"),
                                                          "positive_class": "PNEUMONIA"}}
        wrong = np.isin(patients, np.random.default_rng(0).choice(patients.max() + 1, 12, replace=False))
        for run in plan["runs"]:
            probs = np.eye(2)[np.where(wrong, 1 - labels, labels)] * 0.8 + 0.1
            fake_run(run, RUN_FILES, ["NORMAL", "PNEUMONIA"], labels, probs, val_f1=0.5, paths=paths)
            pd.DataFrame({"dataset": "other", "path": ["ext/a.png", "ext/b.png"], "label": ["NORMAL", "PNEUMONIA"],
                          "predicted": ["NORMAL", "PNEUMONIA"], "p_NORMAL": [1.0, 0.0], "p_PNEUMONIA": [0.0, 1.0]}
                         ).to_csv(Path(run["dir"]) / RUN_FILES["external"], index=False)
        tables = aggregate(plan)
        row, external = tables["summary"].iloc[0], tables["external"].iloc[0]
        return (row["accuracy_seeds_images_high"] - row["accuracy_seeds_images_low"],
                external["internal_mapped_accuracy_test_high"] - external["internal_mapped_accuracy_test_low"])

    (grouped, grouped_internal), (by_image, by_image_internal) = accuracy_intervals(True), accuracy_intervals(False)
    assert grouped > 2 * by_image
    assert grouped_internal > 2 * by_image_internal


def test_the_external_gap_compares_the_same_mapped_task(tmp_path):
    """A model perfect on Normal and at chance between COVID and Viral is perfect on the
    two-class task NORMAL vs PNEUMONIA, internally and externally: no gap."""
    import pandas as pd

    from scripts.report.view import external_sections

    trained = ["Covid", "Normal", "Viral"]
    class_map = {"Covid": "PNEUMONIA", "Normal": "NORMAL", "Viral": "PNEUMONIA"}
    labels = np.array([0] * 4 + [1] * 4 + [2] * 4)
    # COVID and Viral: half of each called the other; Normal: always right
    probs = np.array([[0.0, 1.0, 0.0] if y == 1 else ([0.6, 0.0, 0.4] if i % 2 else [0.4, 0.0, 0.6])
                      for i, y in enumerate(labels)])
    plan = fake_plan(tmp_path, trained, [("scratch_cnn", "scratch", "none", 1), ("scratch_cnn", "scratch", "none", 2)])
    overlap = tmp_path / "overlap.csv"
    pd.DataFrame({"path": ["ext/a.png", "ext/b.png"], "near_duplicate": [False, False]}).to_csv(overlap, index=False)
    plan["config"]["datasets"]["tiny"]["external_tests"] = [
        {"dataset": "other", "class_map": class_map, "near_duplicates": "exclude"}]
    plan["datasets"]["tiny"]["external"] = {"other": {"overlap": str(overlap), "verify": str(tmp_path / "v.json"),
                                                      "positive_class": None}}
    for run in plan["runs"]:
        fake_run(run, RUN_FILES, trained, labels, probs, val_f1=0.5)
        # external: one NORMAL and one PNEUMONIA image, both right after mapping
        pd.DataFrame({"dataset": "other", "path": ["ext/a.png", "ext/b.png"], "label": ["NORMAL", "PNEUMONIA"],
                      "predicted": ["NORMAL", "PNEUMONIA"], "p_NORMAL": [1.0, 0.0], "p_PNEUMONIA": [0.0, 1.0]}
                     ).to_csv(Path(run["dir"]) / RUN_FILES["external"], index=False)
    tables = aggregate(plan)
    assert tables["summary"].iloc[0]["accuracy"] == pytest.approx(8 / 12)  # the 3-class task
    row = tables["external"].iloc[0]
    assert row["accuracy"] == pytest.approx(1.0) and row["internal_mapped_accuracy"] == pytest.approx(1.0)
    assert row["n_internal_images"] == 12
    section = external_sections("tiny", tables, tables["verdict"]["datasets"]["tiny"])[0]
    chosen = section["chosen"]
    for metric in section["common"]:
        assert chosen["internal"][metric] == pytest.approx(chosen["external"][metric]), metric


def test_two_classes_without_a_positive_class_show_macro_recall_once(tmp_path):
    """Each class's specificity is the other's recall: macro specificity = macro recall,
    so only one of the two identical columns is shown."""
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    plan = fake_plan(tmp_path, ["NORMAL", "PNEUMONIA"], [("scratch_cnn", "scratch", "none", 1)])
    probs = np.array([[.9, .1], [.8, .2], [.3, .7], [.2, .8], [.4, .6], [.6, .4], [.7, .3]])
    fake_run(plan["runs"][0], RUN_FILES, ["NORMAL", "PNEUMONIA"], labels, probs, val_f1=0.5)
    tables = aggregate(plan)
    chosen = tables["verdict"]["datasets"]["tiny"]
    assert chosen["metrics"] == ["accuracy", "f1_macro", "auc", "recall_macro"]
    runs = tables["runs"].iloc[0]
    assert runs["specificity_macro"] == pytest.approx(runs["recall_macro"])  # why one is enough
    assert set(tables["comparisons"]["metric"]) <= set(chosen["metrics"])


def test_ece_and_brier_have_a_test_image_interval_and_slope_a_seed_interval(study):
    """The test-image intervals are the percentiles, over the shared resamples, of the
    mean over seeds of each resample's ECE or Brier score; the calibration slope and
    intercept are per run, with the seed t-interval."""
    tables = aggregate(study)
    summary = tables["summary"].set_index("strategy").loc["frozen"]
    counts = st.resample_counts(LABELS, tables["verdict"]["datasets"]["tiny"]["bootstrap"]["resamples"], 0)
    per_seed = [probabilities(3, s) for s in (1, 2)]
    ece = np.mean([st.resampled_ece(LABELS, p, counts, 15) for p in per_seed], axis=0)
    brier = np.mean([st.resampled_brier(LABELS, p, counts) for p in per_seed], axis=0)
    assert (summary["ece_test_low"], summary["ece_test_high"]) == pytest.approx(tuple(np.percentile(ece, [2.5, 97.5])))
    assert (summary["brier_test_low"], summary["brier_test_high"]) == pytest.approx(
        tuple(np.percentile(brier, [2.5, 97.5])))
    slopes = [st.calibration_slope_intercept(LABELS, p, None)[0] for p in per_seed]
    mean, low, high, n = st.t_interval(slopes)
    assert (summary["calibration_slope"], summary["calibration_slope_seed_low"],
            summary["calibration_slope_seed_high"]) == pytest.approx((mean, low, high), nan_ok=True)
    # 12 test images: no seed's fit has a usable standard error, and the summary says over how many seeds
    assert summary["calibration_slope_n"] == n == 0
    assert tables["verdict"]["datasets"]["tiny"]["calibration"]["slope_outcome"] is None  # three classes: top-label
