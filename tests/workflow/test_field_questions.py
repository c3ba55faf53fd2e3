"""The questions a chest X-ray transfer-learning study is judged on: how much
labelled data, does it generalise to another site, can its probabilities be trusted, is
it looking at the lungs, which pretraining. Hand-made runs with known answers for the
statistics; a real scratch CNN for the shortcut score; one tiny real study for external
validation through the workflow.

Each test says which product change would make it fail where the assertion does not.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CHROMIUM, DEMO, PROJECT, copy_dataset, fake_run, snakemake, validated, write_config

from scripts import stages
from scripts.common import fsutil
from scripts.common.layout import RUN_FILES, TABLES
from scripts.data import external
from scripts.stats import shortcut
from scripts.stats import stats as st
from scripts.stats.aggregate import aggregate
from scripts.stats.calibration import run_calibration
from scripts.stats.run_tables import read_shortcut_score
from scripts.stats.verdict import learning_curve, shortcut_verdict

CLASSES = ["a", "b", "c"]
LABELS = np.repeat([0, 1, 2], 20)  # 60 test images
BOX = [0.1, 0.1, 0.9, 0.9]  # the schema's default lung box


def study_plan(root: Path, runs: list[tuple], classes: list[str] = CLASSES, datasets: dict | None = None,
               **settings) -> dict:
    """A plan like the workflow's ``results/plan.json`` for hand-made runs
    ``(model, strategy, weights, fraction, seed)`` of the dataset ``tiny``."""
    dataset = {"path": str(root / "data"), "manifest": str(root / "data.sha256")}
    config = validated({"datasets": {"tiny": dataset, **(datasets or {})},
                        "models": sorted({r[0] for r in runs}), "strategies": sorted({r[1] for r in runs}),
                        "seeds": sorted({r[4] for r in runs}), "train_fractions": sorted({r[3] for r in runs}),
                        "weights": [w if w in ("imagenet", "none") else {"name": w, "source": f"/models/{w}_notop.h5"}
                                    for w in sorted({r[2] for r in runs})],
                        **{"evaluation": {"bootstrap_resamples": 500}, **settings}})
    planned = []
    for model, strategy, weights, fraction, seed in runs:
        folder = f"tiny/runs/{model}/{strategy}/{weights}/frac{float(fraction)!r}/seed{seed}"
        planned.append({"dataset": "tiny", "model": model, "strategy": strategy, "weights": weights,
                        "fraction": repr(float(fraction)), "seed": seed, "dir": str(root / "results" / folder),
                        "log_dir": str(root / "logs" / folder)})
    tests = {test["dataset"]: {**test, "overlap": str(root / f"results/tiny/external/{test['dataset']}.csv"),
                               "verify": str(root / f"results/{test['dataset']}/data/verify.json"),
                               "positive_class": config["datasets"][test["dataset"]].get("positive_class")}
             for test in config["datasets"]["tiny"]["external_tests"]}
    return {"config": config, "settings": {"files": [], "user_set": []},
            "runs": planned, "skipped": [],
            "datasets": {"tiny": {"verify": str(root / "results/tiny/data/verify.json"),
                                  "conversions": str(root / "results/tiny/data/images_32px.json"),
                                  "thumbnails": str(root / "results/tiny/data/test_thumbnails.npz"),
                                  "leakage": str(root / "results/tiny/data/leakage.csv"),
                                  "split": str(root / "results/tiny/splits/seed1.csv"),
                                  "log_dir": str(root / "logs/tiny"), "external": tests}}}


def write_run(run: dict, probabilities: np.ndarray, n_train: int = 20, val_probabilities: np.ndarray | None = None,
              cams: np.ndarray | None = None, labels: np.ndarray = LABELS, classes: list[str] = CLASSES) -> Path:
    """The files of one finished run (cheap: no training)."""
    fake_run(run, RUN_FILES, classes, labels, probabilities, val_f1=0.5)
    folder = Path(run["dir"])
    info = json.loads((folder / RUN_FILES["info"]).read_text())
    (folder / RUN_FILES["info"]).write_text(json.dumps({**info, "n_train": n_train}))
    if val_probabilities is not None:
        table = pd.read_csv(folder / RUN_FILES["val_predictions"])
        for i, name in enumerate(classes):
            table[f"p_{name}"] = val_probabilities[:, i]
        table.to_csv(folder / RUN_FILES["val_predictions"], index=False)
    if cams is not None:
        with np.load(folder / RUN_FILES["gradcam"]) as saved:
            paths = saved["paths"]
        np.savez_compressed(folder / RUN_FILES["gradcam"], cams=cams.astype(np.float16), paths=paths)
    return folder


def right(share: float, seed: int, labels: np.ndarray = LABELS, k: int = 3) -> np.ndarray:
    """Probabilities whose argmax is the label for the first ``share`` of each class's images."""
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet(np.ones(k), len(labels)) * 0.4
    for c in range(k):
        members = np.flatnonzero(labels == c)
        for position, i in enumerate(members):
            target = c if position < round(share * len(members)) else (c + 1) % k
            probabilities[i, target] += 0.6
    return probabilities


# --- 1. How much labelled data? --------------------------------------------------------------------

@pytest.fixture
def curve_study(tmp_path):
    """Baseline: 50% right at 25% of the data, 90% at full data. vgg16 frozen imagenet:
    95% right at 25% (beats it), as the baseline at full data (same predictions: no
    difference). vgg16 full imagenet: 10% right at 25% (significantly *worse*), as the
    baseline at full data. 3 seeds; 15 and 60 training images."""
    runs = [(model, strategy, "imagenet" if strategy != "scratch" else "none", fraction, seed)
            for model, strategy in (("scratch_cnn", "scratch"), ("vgg16", "frozen"), ("vgg16", "full"))
            for fraction in (0.25, 1.0) for seed in (1, 2, 3)]
    plan = study_plan(tmp_path, runs)
    quality = {("scratch_cnn", 0.25): 0.5, ("vgg16", "frozen", 0.25): 0.95, ("vgg16", "full", 0.25): 0.1}
    for run in plan["runs"]:
        fraction = float(run["fraction"])
        share = quality.get((run["model"], run["strategy"], fraction), quality.get((run["model"], fraction), 0.9))
        seed = run["seed"] if fraction < 1 else 100 + run["seed"]  # at full data: identical predictions for all
        write_run(run, right(share, seed), n_train=15 if fraction < 1 else 60)
    return plan


def test_the_learning_curve_table_says_yes_worse_not_significant_or_not_compared(curve_study, tmp_path):
    plan_path = tmp_path / "plan.json"
    fsutil.write_json(plan_path, curve_study)
    tables = {name: str(tmp_path / name.replace("_", "-")) + (".json" if name == "verdict" else ".csv")
              for name in TABLES}
    stages.aggregate(str(plan_path), tables)
    stages.report(str(plan_path), tables, str(tmp_path / "report.html"))
    learning = (tmp_path / "report.html").read_text().split('<table class="learning">')[1].split("</table>")[0]
    rows = {row.split('<td class="l">')[1].split("</td>")[0] + " " + row.split("<td>")[1].split("</td>")[0]:
            row.split('<td class="')[-1].split("</td>")[0] for row in learning.split("<tr>")[2:]}
    assert rows["vgg16 · frozen · weights imagenet 0.25"] == 'ok">yes'  # beats the baseline at 25%
    assert rows["vgg16 · frozen · weights imagenet 1.00"] == '">not significant'  # not "no": no evidence of none
    assert rows["vgg16 · full · weights imagenet 0.25"] == '">no: worse'
    assert rows["scratch_cnn · scratch 0.25"] == '">–'  # the baseline is not compared with itself
    assert json.loads((tmp_path / "verdict.json").read_text())["datasets"]["tiny"]["learning_curve"]


def test_learning_curve_states_where_pretraining_beats_the_baseline_is_worse_or_shows_no_difference(curve_study):
    verdict = aggregate(curve_study)["verdict"]["datasets"]["tiny"]["learning_curve"]
    assert verdict["metric"] == "f1_macro"
    assert "positive difference" in verdict["rule"] and "p < 0.05 after adjustment within its family" in verdict["rule"]
    assert "at least 3 seeds paired" in verdict["rule"]
    statements = {(s["model"], s["strategy"]): s for s in verdict["statements"]}
    assert set(statements) == {("vgg16", "frozen"), ("vgg16", "full")}  # pretrained strategies only
    frozen, full = statements["vgg16", "frozen"], statements["vgg16", "full"]
    assert (frozen["beats_at"], frozen["not_at"]) == ([0.25], [1.0])
    # A difference that is not significant is not "stops beating" (no evidence that the advantage ends).
    assert frozen["text"] == ("beats the scratch CNN baseline at 15 (25%) training images; shows no significant "
                              "difference from the scratch CNN baseline at 60 (100%) training images (which does not "
                              "show that they are equal)")
    # Fails if "beats" ignored the sign of the difference: full is significantly worse at 25%.
    assert (full["beats_at"], full["not_at"], full["worse_at"]) == ([], [0.25, 1.0], [0.25])
    assert full["text"].startswith("is worse than the scratch CNN baseline at 15 (25%) training images; shows no "
                                   "significant difference")
    assert not frozen["too_few_seeds"]


def test_learning_curve_table_has_sizes_values_and_the_comparison(curve_study):
    tables = aggregate(curve_study)
    curve = tables["learning_curve"].set_index(["model", "strategy", "fraction"])
    row = curve.loc[("vgg16", "frozen", 0.25)]
    assert row["n_train"] == 15 and row["n_seeds"] == 3 and row["metric"] == "f1_macro"
    per_seed = [st.bootstrap_metric("f1_macro", LABELS, right(0.95, s), np.arange(60)[None])[0] for s in (1, 2, 3)]
    assert row["value"] == pytest.approx(np.mean(per_seed))
    expected = st.paired_bootstrap(LABELS, [right(0.95, s) for s in (1, 2, 3)], [right(0.5, s) for s in (1, 2, 3)],
                                   "f1_macro", 500, 0)
    assert (row["difference"], row["low"], row["high"]) == pytest.approx(
        (expected["difference"], expected["low"], expected["high"]))
    assert bool(row["beats"]) and curve.loc[("vgg16", "frozen", 1.0), "difference"] == pytest.approx(0)
    assert pd.isna(curve.loc[("scratch_cnn", "scratch", 0.25), "beats"])  # the baseline is not compared with itself


def test_beats_needs_a_positive_difference_and_a_holm_adjusted_p_below_005():
    """Fails if the rule used the unadjusted p-value or ignored the sign."""
    config = {"dataset": "d", "model": "vgg16", "strategy": "frozen", "weights": "imagenet", "n_train": 10.0,
              "n_seeds": 3, "auc": 0.8, **{f"auc_{b}": 0.7 for b in ("seed_low", "seed_high", "test_low", "test_high")}}
    cases = {0.1: (0.1, 0.03, 0.06), 0.2: (-0.1, 0.001, 0.002), 0.5: (0.1, 0.001, 0.002), 1.0: (0.0, 1.0, 1.0)}
    summary = [{**config, "fraction": f} for f in cases]
    comparisons = [{**config, "fraction": f, "metric": "auc", "n_pairs": 3, "difference": d, "low": 0, "high": 0,
                    "p_value": p, "p_holm": holm, "family": "baseline"} for f, (d, p, holm) in cases.items()]
    beats = {row["fraction"]: row["beats"] for row in learning_curve(summary, comparisons, "auc")}
    assert beats == {0.1: False, 0.2: False, 0.5: True, 1.0: False}


# --- 2. Does it generalise? ---------------------------------------------------------------------------

def test_class_map_problems_name_the_key():
    trained, targets = ["Covid", "Normal", "Viral Pneumonia"], ["NORMAL", "PNEUMONIA"]
    good = {"Covid": "PNEUMONIA", "Normal": "NORMAL", "Viral Pneumonia": "PNEUMONIA"}
    assert external.class_map_problems("k", good, trained, targets) == []
    missing = external.class_map_problems("k", {"Covid": "PNEUMONIA", "Normal": "NORMAL"}, trained, targets)
    assert missing == ["k: the trained classes ['Viral Pneumonia'] are not mapped (map every class of "
                       "['Covid', 'Normal', 'Viral Pneumonia'])"]
    wrong = external.class_map_problems("k", {**good, "Normal": "Healthy"}, trained, targets)
    assert "k: the targets ['Healthy'] are not classes of the external dataset (['NORMAL', 'PNEUMONIA'])" in wrong
    assert "k: no trained class maps to the external classes ['NORMAL']" in wrong[1]
    extra = external.class_map_problems("k", {**good, "TB": "PNEUMONIA"}, trained, targets)
    assert extra == ["k: ['TB'] are not classes of the trained dataset (['Covid', 'Normal', 'Viral Pneumonia'])"]


def test_probabilities_collapse_by_summing_over_the_mapped_classes():
    trained = ["Covid", "Normal", "Viral Pneumonia"]
    class_map = {"Covid": "PNEUMONIA", "Normal": "NORMAL", "Viral Pneumonia": "PNEUMONIA"}
    probabilities = np.array([[0.3, 0.4, 0.3], [0.1, 0.8, 0.1], [0.5, 0.2, 0.3]])
    collapsed = external.collapse(probabilities, trained, class_map)
    assert external.external_classes(class_map) == ["NORMAL", "PNEUMONIA"]
    # image 1: Normal is the trained argmax, but the pneumonia classes together outweigh it
    np.testing.assert_allclose(collapsed, [[0.4, 0.6], [0.8, 0.2], [0.2, 0.8]])


def test_near_duplicates_find_the_same_radiograph_in_another_collection_not_a_different_one():
    """Real bundled images: the demo's test/Normal/0103.jpeg is Kermany's IM-0086-0001
    (another decoding and size); Kermany's IM-0001-0001 is another child."""
    from scripts.data.images import load_image

    kermany = PROJECT / "resources" / "kermany-pneumonia-subset" / "test" / "NORMAL"
    demo = load_image(DEMO / "test" / "Normal" / "0103.jpeg", 64)[0]
    prints = external.fingerprints([load_image(kermany / name, 64)[0] for name in
                                    ("IM-0001-0001.jpeg", "IM-0086-0001.jpeg")])
    where, correlation = external.near_duplicates(prints, external.fingerprints([demo]))
    assert correlation[1] >= external.NEAR_DUPLICATE_CORRELATION > correlation[0]
    assert correlation[1] > 0.95 and correlation[0] < 0.6 and list(where) == [0, 0]


def external_study(tmp_path, policy: str) -> dict:
    """Two seeds of the baseline evaluated on 6 external images (2 classes), one of which
    (ext/test/SICK/4.png) is a near-duplicate of a training image."""
    datasets = {"ext": {"path": str(tmp_path / "ext"), "manifest": "m", "positive_class": "SICK", "train": False}}
    class_map = {"a": "SICK", "b": "SICK", "c": "WELL"}
    runs = [("scratch_cnn", "scratch", "none", 1.0, seed) for seed in (1, 2)]
    plan = study_plan(tmp_path, runs, datasets={
        "tiny": {"path": str(tmp_path / "data"), "manifest": str(tmp_path / "data.sha256"),
                 "external_tests": [{"dataset": "ext", "class_map": class_map, "near_duplicates": policy}]},
        **datasets})
    paths = [f"test/{label}/{i}.png" for i, label in enumerate(["SICK"] * 3 + ["WELL"] * 3)]
    overlap = plan["datasets"]["tiny"]["external"]["ext"]["overlap"]
    Path(overlap).parent.mkdir(parents=True)
    pd.DataFrame({"path": paths, "label": [p.split("/")[1] for p in paths], "most_similar": "train/a/x.png",
                  "most_similar_split": "train", "correlation": [0.1, 0.2, 0.3, 0.1, 0.99, 0.2],
                  "near_duplicate": [False, False, False, False, True, False]}).to_csv(overlap, index=False)
    # P(SICK) per image and seed; the threshold is the argmax: SICK when > 0.5
    sick = {1: [0.9, 0.8, 0.3, 0.2, 0.9, 0.1], 2: [0.9, 0.4, 0.7, 0.4, 0.8, 0.6]}
    for run in plan["runs"]:
        write_run(run, right(0.9, run["seed"]))
        pd.DataFrame({"dataset": "ext", "path": paths, "label": [p.split("/")[1] for p in paths],
                      "predicted": ["SICK" if p > 0.5 else "WELL" for p in sick[run["seed"]]],
                      "p_SICK": sick[run["seed"]], "p_WELL": [1 - p for p in sick[run["seed"]]]}).to_csv(
            Path(run["dir"]) / RUN_FILES["external"], index=False)
    return plan


def test_external_metrics_leave_out_near_duplicates_of_training_images(tmp_path):
    tables = aggregate(external_study(tmp_path, "exclude"))
    row = tables["external"].iloc[0]
    # Without image 4 (a WELL image both seeds call SICK): seed 1 misses image 2 (4/5 right),
    # seed 2 misses images 1 and 5 (3/5 right)
    assert (row["external"], row["n_images"], row["n_seeds"]) == ("ext", 5, 2)
    assert row["accuracy"] == pytest.approx((4 / 5 + 3 / 5) / 2)
    assert row["sensitivity"] == pytest.approx((2 / 3 + 2 / 3) / 2)  # recall of SICK, the positive class
    assert row["specificity"] == pytest.approx((2 / 2 + 1 / 2) / 2)
    _, low, high, _ = st.t_interval([4 / 5, 3 / 5])  # two seeds: [-0.57, 1.97], clipped to the range
    assert (row["accuracy_seed_low"], row["accuracy_seed_high"]) == pytest.approx((max(low, 0.0), min(high, 1.0)))
    assert row["accuracy_test_low"] <= row["accuracy"] <= row["accuracy_test_high"]
    info = tables["verdict"]["datasets"]["tiny"]["external"]["ext"]
    assert (info["n_test"], info["n_evaluated"], info["policy"]) == (6, 5, "exclude")
    assert [d["path"] for d in info["near_duplicates"]] == ["test/WELL/4.png"]


def test_external_metrics_keep_near_duplicates_when_asked(tmp_path):
    row = aggregate(external_study(tmp_path, "keep"))["external"].iloc[0]
    assert row["n_images"] == 6 and row["accuracy"] == pytest.approx((4 / 6 + 3 / 6) / 2)


def test_external_data_checks_that_did_not_finish_are_reported_not_guessed(tmp_path):
    """allow_missing_runs: the near-duplicate check of the external set never ran."""
    from scripts.report import report as rep

    plan = external_study(tmp_path, "exclude")
    Path(plan["datasets"]["tiny"]["external"]["ext"]["overlap"]).unlink()
    tables = aggregate(plan)
    assert tables["external"].empty and tables["verdict"]["datasets"]["tiny"]["external"]["ext"]["missing"]
    rep.render(plan, {**tables, "verdict": json.loads(json.dumps(tables["verdict"]))}, tmp_path / "r.html")
    assert "The data checks of ext (verification, or its near-duplicate check" in (tmp_path / "r.html").read_text()


@pytest.mark.parametrize("class_map, expected", [
    ({"Covid": "SICK", "Normal": "WELL"},
     r"datasets.tiny.external_tests\[0\].class_map: the trained classes \['Viral Pneumonia'\] are not mapped"),
    ({"Covid": "SICK", "Normal": "WELL", "Viral Pneumonia": "ILL"},
     r"datasets.tiny.external_tests\[0\].class_map: the targets \['ILL'\] are not classes of the external dataset"),
])
def test_a_wrong_class_map_stops_the_workflow_naming_the_key(tmp_path, class_map, expected):
    data = copy_dataset(tmp_path / "data", {"train": 2, "test": 1}, extra=())
    other = copy_dataset(tmp_path / "other", {"train": 2, "test": 1}, extra=(),
                         rename={"Covid": "SICK", "Viral Pneumonia": "ILLNESS", "Normal": "WELL"})
    datasets = {"tiny": {"path": str(data), "manifest": f"{data}.sha256",
                         "external_tests": [{"dataset": "other", "class_map": class_map}]},
                "other": {"path": str(other), "manifest": f"{other}.sha256", "train": False}}
    config = write_config(tmp_path / "c.yaml", data, datasets=datasets)
    result = snakemake(tmp_path, "--configfile", str(config), "-n", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and re.search(expected, output), output[-2000:]


# --- 3. Can the probabilities be trusted? --------------------------------------------------------------

def test_ece_and_brier_by_hand():
    """Confidences 0.72 (right), 0.78 (wrong), 0.9 (right), 0.6 (right), each alone in one
    of 15 equal-width bins: ECE = (0.28 + 0.78 + 0.1 + 0.4) / 4 = 0.39 (with 10 bins 0.72 and
    0.78 would share (0.7, 0.8] and give 0.25). Brier, multi-class (sum over classes):
    (2 · 0.28² + 2 · 0.78² + 2 · 0.1² + 2 · 0.4²) / 4 = 0.4284 (the binary form is half)."""
    probabilities = np.array([[0.72, 0.28], [0.78, 0.22], [0.1, 0.9], [0.6, 0.4]])
    values, scaled = run_calibration(([], np.array([0, 1, 1, 0]), probabilities), None, None)
    assert values["ece"] == pytest.approx(0.39) and values["brier"] == pytest.approx(0.4284)
    assert scaled is None and np.isnan(values["temperature"])
    assert st.expected_calibration_error(np.array([0, 1, 1, 0]), probabilities, 10) == pytest.approx(0.25)


def test_temperature_is_fitted_on_validation_predictions_only(tmp_path):
    plan = study_plan(tmp_path, [("scratch_cnn", "scratch", "none", 1.0, 1)],
                      evaluation={"bootstrap_resamples": 100, "temperature_scaling": True})
    test = right(0.7, 1) ** 3
    test /= test.sum(axis=1, keepdims=True)  # over-confident
    validation = right(0.7, 2)
    write_run(plan["runs"][0], test, val_probabilities=validation)
    tables = aggregate(plan)
    run = tables["runs"].iloc[0]
    expected = st.fit_temperature(np.log(validation), LABELS)
    assert run["temperature"] == pytest.approx(expected, rel=1e-6)
    assert abs(run["temperature"] - st.fit_temperature(np.log(test), LABELS)) > 0.1  # not the test set's
    scaled = st.apply_temperature(test, expected)
    assert run["ece_scaled"] == pytest.approx(st.expected_calibration_error(LABELS, scaled, 15))
    assert run["brier_scaled"] == pytest.approx(st.brier_score(LABELS, scaled))
    reliability = json.loads(tables["summary"].iloc[0]["reliability"])
    for got, probabilities in ((reliability["before"], test), (reliability["after"], scaled)):
        want = st.reliability_bins(LABELS, probabilities, 15)
        assert [b["count"] for b in got] == [b["count"] for b in want] and sum(b["count"] for b in got) == 60
        for key in ("confidence", "accuracy"):
            np.testing.assert_allclose([np.nan if b[key] is None else b[key] for b in got],
                                       [np.nan if b[key] is None else b[key] for b in want], rtol=1e-9)


def test_calibration_without_temperature_scaling_reads_no_validation_file(tmp_path):
    plan = study_plan(tmp_path, [("scratch_cnn", "scratch", "none", 1.0, 1)])
    folder = write_run(plan["runs"][0], right(0.7, 1))
    (folder / RUN_FILES["val_predictions"]).unlink()
    run = aggregate(plan)["runs"].iloc[0]
    assert run["ece"] == pytest.approx(st.expected_calibration_error(LABELS, right(0.7, 1), 15))
    assert np.isnan(run["temperature"])


# --- 4. Is it looking at the lungs? ------------------------------------------------------------------

def test_shortcut_score_by_hand():
    uniform, corner, centre = np.ones((1, 8, 8)), np.zeros((1, 4, 4)), np.zeros((1, 4, 4))
    corner[0, 0, 0] = 1.0  # cell [0, 0.25]^2: (0.15 / 0.25)^2 = 0.36 of it inside the box
    centre[0, 1:3, 1:3] = 1.0
    assert shortcut.outside_share(uniform, BOX)[0] == pytest.approx(1 - 0.8 * 0.8) == shortcut.uniform_score(BOX)
    assert shortcut.outside_share(corner, BOX)[0] == pytest.approx(1 - 0.36)
    assert shortcut.outside_share(centre, BOX)[0] == pytest.approx(0)
    assert np.isnan(shortcut.outside_share(np.zeros((1, 4, 4)), BOX)[0])  # nothing to locate
    assert not shortcut.informative(2, 2, BOX) and shortcut.informative(4, 4, BOX)


def marker_dataset(n: int, seed: int, corner: bool) -> tuple[np.ndarray, np.ndarray]:
    """64 px noise; class 1 (every other image) has a bright 6 px square marker in the
    top-left corner (or, for the control, at the centre)."""
    rng = np.random.default_rng(seed)
    images = rng.normal(90, 30, (n, 64, 64, 3))
    labels = np.arange(n) % 2
    for i in np.flatnonzero(labels):
        y, x = rng.integers(0, 2, 2) if corner else rng.integers(26, 32, 2)
        images[i, y:y + 6, x:x + 6] = 230
    return np.clip(images, 0, 255).astype(np.uint8), labels


@pytest.mark.parametrize("corner", [True, False], ids=["corner-marker", "centre-marker"])
def test_shortcut_score_flags_a_model_that_learned_a_corner_marker(tmp_path, corner):
    """A scratch CNN learns the marker (test accuracy >= 0.9). Its maps (8 x 8 cells at
    64 px) put 0.45-0.50 of their mass outside the box on average for the corner marker
    (seeds 1, 2, 3, 7), 0.09-0.11 for the centre marker; at seed 7 every corner-marker map
    puts more outside than a uniform map (0.38-0.50 against 0.36), no centre-marker map
    does: the default (more than 10% of such maps) flags the first and not the second.
    Fails if the score counted mass inside the box, or the verdict compared it the wrong
    way round."""
    keras = pytest.importorskip("keras")
    from scripts.train.inference import InferencePass
    from scripts.train.models import build_model, explained_layer

    keras.utils.set_random_seed(7)
    x_train, y_train = marker_dataset(256, 1, corner)
    x_test, y_test = marker_dataset(64, 2, corner)
    model, _ = build_model("scratch_cnn", 64, 2, None, dropout=0.0, bn_momentum=0.7)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x_train.astype("float32"), y_train, batch_size=32, epochs=4, verbose=0)
    layer, _ = explained_layer(model, min_cells=7)
    result = InferencePass(model, layer, batch_size=32).run(x_test, cams=True)
    assert (result["probabilities"].argmax(1) == y_test).mean() >= 0.9
    np.savez_compressed(tmp_path / "gradcam.npz", cams=result["cams"], paths=np.arange(64).astype(str))

    evaluation = validated({"datasets": {"d": {"path": ".", "manifest": "m"}}, "models": ["scratch_cnn"],
                            "strategies": ["scratch"], "seeds": [1]})["evaluation"]
    score = read_shortcut_score(tmp_path / "gradcam.npz", evaluation["lung_box"])
    assert score["cam_cells"] == "8x8" and score["cam_informative"]
    config = {"dataset": "d", "model": "scratch_cnn", "strategy": "scratch", "weights": "none", "fraction": 1.0}
    verdict = shortcut_verdict([{**config, **score}], evaluation, config)
    if corner:
        assert score["shortcut_score"] > shortcut.uniform_score(BOX)
        assert score["shortcut_above_uniform"] > evaluation["shortcut_image_share"]
        assert verdict["flagged"][0]["above_uniform"] == score["shortcut_above_uniform"] and verdict["chosen_flagged"]
    else:
        assert score["shortcut_score"] < 0.2 and verdict["flagged"] == []


# --- 5. Which pretraining? -------------------------------------------------------------------------

def test_each_pretraining_source_is_compared_with_random_init(tmp_path):
    quality = {"none": 0.4, "imagenet": 0.9, "hed": 0.6}
    runs = [("scratch_cnn", "scratch", "none", 1.0, s) for s in (1, 2)]
    runs += [("vgg16", "frozen", w, 1.0, s) for w in quality for s in (1, 2)]
    plan = study_plan(tmp_path, runs)
    for run in plan["runs"]:
        write_run(run, right(quality[run["weights"]] if run["model"] == "vgg16" else 0.5, run["seed"]))
    table = aggregate(plan)["weights_comparison"]
    accuracy = table[table["metric"] == "accuracy"].set_index("weights")
    assert set(accuracy.index) == {"imagenet", "hed"}  # none is the reference; scratch has no source
    for source in ("imagenet", "hed"):
        expected = st.paired_bootstrap(LABELS, [right(quality[source], s) for s in (1, 2)],
                                       [right(quality["none"], s) for s in (1, 2)], "accuracy", 500, 0)
        assert (accuracy.loc[source, "difference"], accuracy.loc[source, "p_value"]) == pytest.approx(
            (expected["difference"], expected["p_value"]))
    assert list(accuracy["p_holm"]) == pytest.approx(list(st.holm(accuracy["p_value"])))


# --- the report shows each question -----------------------------------------------------------------

def test_the_report_shows_the_five_questions(tmp_path):
    quality = {"none": 0.4, "imagenet": 0.9}
    runs = [("scratch_cnn", "scratch", "none", f, s) for f in (0.5, 1.0) for s in (1, 2)]
    runs += [("vgg16", "frozen", w, f, s) for w in quality for f in (0.5, 1.0) for s in (1, 2)]
    plan = study_plan(tmp_path, runs, evaluation={"bootstrap_resamples": 100, "temperature_scaling": True})
    for run in plan["runs"]:
        cams = np.zeros((60, 4, 4))
        cams[:, 0, 0] = 1.0  # every map in the corner: 0.64 outside, above a uniform map's 0.36
        write_run(run, right(quality[run["weights"]] if run["model"] == "vgg16" else 0.5, run["seed"]),
                  n_train=10 if run["fraction"] == "0.5" else 20, cams=cams)
    from scripts.report import report as rep

    tables = aggregate(plan)
    rep.render(plan, {**tables, "verdict": json.loads(json.dumps(tables["verdict"]))}, tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    for section in ('id="learning-1"', 'id="calibration-1"', 'id="shortcut-1"', 'id="weights-comparison-1"',
                    'id="shortcut-flags-1"', "15 equal-width bins", "[left, top, right, bottom] = 0.1, 0.1, 0.9, 0.9",
                    'id="families"', 'id="resamples-1"', "95% interval over seeds and test images",
                    "vgg16 · frozen · weights imagenet</strong>: has fewer than 3 seeds paired with the scratch CNN "
                    "baseline at 10 (50%), 20 (100%) training images: no claim either way",
                    '<th>imagenet<br><span class="meta">Keras ImageNet weights</span></th>',
                    '<th>none<br><span class="meta">random initialisation: not pretrained</span></th>'):
        assert section in html, section
    assert html.count("above 10%: shortcut suspected") == 6  # every configuration
    if CHROMIUM:
        from conftest import open_in_chromium

        page = open_in_chromium(tmp_path / "r.html", tmp_path)
        assert [i for i in page["images"] if not i["ok"]] == [] and page["outside"] == []


# --- external validation through the workflow: one tiny real study --------------------------------------

def test_external_validation_through_the_workflow(tmp_path):
    """The external dataset is a renamed copy of the trained dataset's own test images, so
    each external probability must equal the sum of the run's internal probabilities of
    the classes mapped onto it, and the overlap check must find every image."""
    from scripts.data.manifest import make_manifest

    data = copy_dataset(tmp_path / "data", {"train": 10, "test": 3}, extra=())
    other = tmp_path / "other"
    for source, target in (("Covid", "SICK"), ("Normal", "WELL")):
        (other / "train" / target).mkdir(parents=True)
        for file in sorted((DEMO / "train" / source).iterdir())[:2]:
            shutil.copy2(file, other / "train" / target / file.name)
        shutil.copytree(data / "test" / source, other / "test" / target)  # data's own test images

    (tmp_path / "other.sha256").write_text(make_manifest(other))
    class_map = {"Covid": "SICK", "Normal": "WELL", "Viral Pneumonia": "SICK"}
    datasets = {"tiny": {"path": str(data), "manifest": f"{data}.sha256",
                         "external_tests": [{"dataset": "other", "class_map": class_map, "near_duplicates": "keep"}]},
                "other": {"path": str(other), "manifest": str(tmp_path / "other.sha256"), "positive_class": "SICK",
                          "train": False}}
    config = write_config(tmp_path / "c.yaml", data, datasets=datasets, models=["scratch_cnn"], strategies=["scratch"],
                          train_fractions=[0.5, 1.0], evaluation={"bootstrap_resamples": 100,
                                                                  "temperature_scaling": True})
    snakemake(tmp_path, "--configfile", str(config), "--cores", "2")
    plan = json.loads((tmp_path / "results/plan.json").read_text())
    assert list(plan["datasets"]) == ["tiny"] and {r["dataset"] for r in plan["runs"]} == {"tiny"}  # not trained on
    run = tmp_path / plan["runs"][-1]["dir"]
    internal = pd.read_csv(run / "predictions.csv").set_index("path")
    externals = pd.read_csv(run / "external_predictions.csv")
    assert len(externals) == 6 and set(externals["dataset"]) == {"other"}
    for _, row in externals.iterrows():
        source = internal.loc[row["path"].replace("SICK", "Covid").replace("WELL", "Normal")]
        assert row["p_SICK"] == pytest.approx(source["p_Covid"] + source["p_Viral Pneumonia"], abs=1e-6)
        assert row["p_WELL"] == pytest.approx(source["p_Normal"], abs=1e-6)
    overlap = pd.read_csv(tmp_path / "results/tiny/external/other.csv")
    assert overlap["near_duplicate"].all() and (overlap["correlation"] > 0.99).all()
    table = pd.read_csv(tmp_path / "results/external.csv")
    assert len(table) == 2 and (table["n_images"] == 6).all()
    html = (tmp_path / "results/report.html").read_text()
    assert "External validation on other" in html and "6 of 6 external test images are the same radiograph" in html
