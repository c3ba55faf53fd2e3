"""What to deploy, called directly: a dataset's ensembles and, without a positive class, no
threshold; its report section built from the tables (as read back from csv); the decision
curve's figure and thresholds. The two-class operating point and decision curve through the
aggregate stage are in test_decision.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from scripts.common.layout import RUN_FILES
from scripts.report import deployment as rendered
from scripts.stats import deployment
from scripts.stats import stats as st
from scripts.stats.run_tables import CONFIG
from scripts.stats.verdict import ranked_candidates

CLASSES = ["a", "b", "c"]
Y_TEST = np.array([0, 1, 2, 0, 1, 2])
Y_VAL = np.array([0, 1, 2])


def sure(predicted) -> np.ndarray:
    """Probabilities 0.8 on the predicted class of each image, 0.1 on the others."""
    return np.eye(3)[np.asarray(predicted)] * 0.7 + 0.1


def config(strategy: str, val_f1: float, params: int) -> dict:
    return {"dataset": "tiny", "model": "vgg16", "strategy": strategy, "weights": "imagenet", "fraction": 1.0,
            "val_f1_macro": val_f1, "trainable_params": params}


FROZEN, FULL = config("frozen", 0.9, 10), config("full", 0.8, 1000)
# run index: (configuration, seed, test predictions, validation predictions)
RUNS = {0: (FROZEN, 1, [0, 1, 2, 0, 1, 1], [0, 1, 2]), 1: (FROZEN, 2, [0, 1, 2, 0, 0, 2], [0, 1, 1]),
        2: (FULL, 1, [0, 1, 2, 2, 1, 2], [0, 0, 2])}


@pytest.fixture
def three_classes(tmp_path):
    """The decision's inputs for a three-class dataset: frozen (2 seeds, chosen), full (1 seed)."""
    plan = {"config": {"decision": {"seed_ensembles": True, "top_k": 2, "prevalence": None,
                                    "operating_point": {"rule": "sensitivity", "target": 0.9}}},
            "runs": [], "datasets": {"tiny": {"split": str(tmp_path / "split.csv")}}}
    test = {}
    for i, (row, seed, predicted, validated) in RUNS.items():
        folder = tmp_path / f"run{i}"
        folder.mkdir()
        plan["runs"].append({**{k: row[k] for k in CONFIG}, "seed": seed, "dir": str(folder)})
        frame = pd.DataFrame({"path": [f"val/{j}.png" for j in range(3)], "label": [CLASSES[j] for j in Y_VAL]})
        for c, name in enumerate(CLASSES):
            frame[f"p_{name}"] = sure(validated)[:, c]
        frame.to_csv(folder / RUN_FILES["val_predictions"], index=False)
        test[i] = ([f"test/{j}.png" for j in range(6)], Y_TEST, sure(predicted))
    done = pd.DataFrame([{**{k: row[k] for k in CONFIG}, "seed": seed} for row, seed, _, _ in RUNS.values()])
    verdict = {"chosen": FROZEN, "selection_metric": "f1_macro", "classes": CLASSES}
    bootstrap = st.SharedBootstrap(Y_TEST, 50, 0, None)
    return plan, done, test, ranked_candidates([FULL, FROZEN], "f1_macro"), bootstrap, verdict


def test_no_chosen_configuration_no_decision(three_classes):
    plan, done, test, summary, bootstrap, verdict = three_classes
    decided = deployment.dataset_decision("tiny", plan, done, test, summary, bootstrap, ["accuracy"],
                                          {**verdict, "chosen": None})
    assert decided == {**deployment.empty_tables(), "info": None}


def test_three_classes_get_a_seed_and_a_top_k_ensemble_and_no_threshold(three_classes):
    plan, done, test, summary, bootstrap, verdict = three_classes
    decided = deployment.dataset_decision("tiny", plan, done, test, summary, bootstrap, ["accuracy"], verdict)
    assert decided["operating_point"] == [] and decided["decision_curve"] == []
    info = decided["info"]
    assert not info["two_class"] and info["argmax_reason"] == deployment.ARGMAX_REASON
    assert info["chosen"] == "vgg16 · frozen · weights imagenet" and info["validation_shared"]
    rows = {row["kind"]: row for row in decided["ensembles"]}
    assert set(rows) == {"seeds", "top_k"}  # full has one seed: no seed ensemble of its own
    frozen_mean = (sure(RUNS[0][2]) + sure(RUNS[1][2])) / 2
    top_two = (frozen_mean + sure(RUNS[2][2])) / 2
    assert (rows["seeds"]["n_runs"], rows["top_k"]["n_runs"]) == (2, 3)
    assert rows["top_k"]["ensemble"] == "top-2 by validation"
    assert rows["top_k"]["members"] == "vgg16 · frozen · weights imagenet; vgg16 · full · weights imagenet"
    assert rows["seeds"]["value"] == pytest.approx(accuracy_score(Y_TEST, frozen_mean.argmax(1)))
    assert rows["top_k"]["value"] == pytest.approx(accuracy_score(Y_TEST, top_two.argmax(1)))
    chosen = np.mean([accuracy_score(Y_TEST, sure(RUNS[i][2]).argmax(1)) for i in (0, 1)])
    assert rows["seeds"]["difference"] == pytest.approx(rows["seeds"]["value"] - chosen)
    # validation: the mean of the members' out-of-bag predictions (here every seed saw all three images)
    frozen_val = (sure(RUNS[0][3]) + sure(RUNS[1][3])) / 2
    assert rows["seeds"]["val_value"] == pytest.approx(f1_score(Y_VAL, frozen_val.argmax(1), average="macro"))
    assert [row["best"] for row in decided["ensembles"]].count(True) == 1


def test_without_seed_ensembles_and_top_k_there_is_nothing_to_deploy(three_classes):
    plan, done, test, summary, bootstrap, verdict = three_classes
    plan["config"]["decision"].update(seed_ensembles=False, top_k=1)
    decided = deployment.dataset_decision("tiny", plan, done, test, summary, bootstrap, ["accuracy"], verdict)
    assert decided["ensembles"] == [] and decided["info"]["best"] is None


def test_the_report_section_takes_its_dataset_rows_as_read_back_from_csv():
    ensembles = pd.DataFrame([
        {"dataset": "tiny", "ensemble": "top-2", "kind": "top_k", "members": "x; y", "n_runs": 3, "val_value": 0.8,
         "n_val": 6, "metric": metric, "value": value, "best": "True"}
        for metric, value in (("accuracy", 0.7), ("auc", 0.9))] + [
        {"dataset": "other", "ensemble": "elsewhere", "kind": "seeds", "members": "z", "n_runs": 2,
         "val_value": 0.5, "n_val": 6, "metric": "accuracy", "value": 0.5, "best": "False"}])
    section = rendered.report_section("tiny", {"ensembles": ensembles}, {"decision": {"best": "top-2"}})
    (row,) = section["ensembles"]
    assert (row["name"], row["n_runs"], row["best"]) == ("top-2", 3, True)
    assert {metric: cell["value"] for metric, cell in row["cells"].items()} == {"accuracy": 0.7, "auc": 0.9}
    assert section["best"] == "top-2" and section["operating_point"] == [] and section["figure"] is None
    assert rendered.report_section("tiny", {"ensembles": ensembles}, {}) is None


def test_the_decision_curve_figure_styles_treat_all_and_treat_none(monkeypatch):
    import matplotlib.figure

    drawn = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda figure, *a, **k: drawn.append(figure))
    thresholds = deployment.DECISION_CURVE_THRESHOLDS
    curve = pd.concat([pd.DataFrame({"prevalence_of": of, "prevalence": prevalence, "strategy": name,
                                     "threshold": thresholds, "net_benefit": values, "low": values - 0.05,
                                     "high": values + 0.05})
                       for of, prevalence in (("test", 0.5), ("set", 0.1))
                       for name, values in (("chosen", 0.4 - thresholds * 0.3), ("treat all", 0.5 - thresholds),
                                            ("treat none", 0 * thresholds))])
    assert rendered.decision_curve_figure(curve).startswith("data:image/png;base64,")
    test_panel, set_panel = drawn[0].axes
    assert [line.get_label() for line in test_panel.get_lines()] == ["chosen", "treat all", "treat none"]
    assert [line.get_linestyle() for line in test_panel.get_lines()] == ["-", "--", ":"]
    assert len(test_panel.collections) == 1  # the band of the model; none for treat-all and treat-none
    assert "test prevalence (0.500)" in test_panel.get_title() and "set prevalence (0.100)" in set_panel.get_title()
    low, high = test_panel.get_ylim()
    assert low < 0 and high == pytest.approx(0.49 * 1.1 + 0.01)  # a little above treat all's largest, at 0.01


def test_the_decision_curve_has_every_hundredth_from_0_01_to_0_99_as_threshold():
    thresholds = deployment.DECISION_CURVE_THRESHOLDS
    assert len(thresholds) == 99 and (thresholds[0], thresholds[-1]) == (0.01, 0.99)
    assert np.allclose(np.diff(thresholds), 0.01) and list(thresholds[:3]) == [0.01, 0.02, 0.03]
