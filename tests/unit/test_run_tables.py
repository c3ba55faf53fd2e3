"""A finished run's files read back as table rows and arrays: what counts as finished, the
row of the runs table, predictions in path order, the shortcut score, the software sets,
booleans as pandas writes them, and the patients of the test images."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import fake_run

from scripts.common.layout import RUN_FILES
from scripts.stats import run_tables as rt

CLASSES = ["NORMAL", "PNEUMONIA"]
RUN = {"dataset": "tiny", "model": "vgg16", "strategy": "frozen", "weights": "imagenet", "fraction": "0.5",
       "seed": 1}


def finished(tmp_path, **changes) -> dict:
    run = {**RUN, **changes, "dir": str(tmp_path / "run"), "log_dir": str(tmp_path / "log")}
    fake_run(run, RUN_FILES, CLASSES, [0, 1, 1], np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]), val_f1=0.75)
    return run


def test_a_run_is_finished_when_its_train_and_metrics_files_exist(tmp_path):
    run = finished(tmp_path)
    files = rt.read_run(run, RUN_FILES)
    assert files["info"]["strategy"] == "frozen" and files["metrics"]["validation"]["f1_macro"] == 0.75
    (tmp_path / "run" / RUN_FILES["metrics"]).unlink()
    assert rt.read_run(run, RUN_FILES) is None


def test_the_row_of_a_finished_run_and_of_a_missing_one(tmp_path):
    run = finished(tmp_path)
    row = rt.run_row(run, rt.read_run(run, RUN_FILES))
    assert row["status"] == "ok" and row["fraction"] == 0.5 and row["seed"] == 1
    assert row["accuracy"] == pytest.approx(2 / 3) and row["val_f1_macro"] == 0.75
    assert (row["train_seconds"], row["n_train"], row["best_epoch"]) == (1.5, 20, 2)
    assert (row["weights_source"], row["host"], row["devices"]) == ("imagenet", "node1", "CPU")
    assert json.loads(row["software"]) == {"tensorflow": "2.21.0"}
    assert row["training_input"] == "head on features, then augmented images"
    missing = rt.run_row(run, None)
    assert missing["status"] == "missing" and "accuracy" not in missing
    assert {key: missing[key] for key in rt.CONFIG} == {**{k: RUN[k] for k in rt.CONFIG}, "fraction": 0.5}


@pytest.mark.parametrize("info, said", [
    ({"strategy": "linear_probe", "augmentation_applied": False}, "cached features (logistic regression)"),
    ({"strategy": "frozen", "feature_cache": True, "feature_cache_reused": True, "augmentation_applied": False},
     "head on cached features (reused)"),
    ({"strategy": "partial", "feature_cache": True, "augmentation_applied": True},
     "head on cached features, then augmented images"),
    ({"strategy": "scratch", "augmentation_applied": True}, "augmented images"),
    ({"strategy": "scratch", "augmentation_applied": False}, "images, no augmentation"),
])
def test_training_input_says_how_the_run_saw_its_images(info, said):
    assert rt.training_input(info) == said


def test_read_predictions_sorts_by_path_filters_and_orders_the_columns_by_class(tmp_path):
    path = tmp_path / "predictions.csv"
    pd.DataFrame({"dataset": ["a", "b", "a", "a"], "path": ["z.png", "y.png", "m.png", "k.png"],
                  "label": ["PNEUMONIA", "NORMAL", "NORMAL", "PNEUMONIA"],
                  "p_PNEUMONIA": [0.9, 0.2, 0.3, 0.6], "p_NORMAL": [0.1, 0.8, 0.7, 0.4]}).to_csv(path, index=False)
    paths, labels, probabilities = rt.read_predictions(path, CLASSES, dataset="a", excluded=frozenset({"k.png"}))
    assert paths == ["m.png", "z.png"] and labels.tolist() == [0, 1]
    assert probabilities.tolist() == [[0.7, 0.3], [0.1, 0.9]]
    paths, labels, probabilities = rt.read_predictions(path, CLASSES, dataset="none such")
    assert paths == [] and labels.shape == (0,) and probabilities.shape == (0, 2)


def test_the_shortcut_score_leaves_out_empty_maps(tmp_path):
    box = [0.25, 0.25, 0.75, 0.75]  # on a 4 x 4 map: the central 2 x 2 cells
    inside, uniform, empty = np.zeros((4, 4)), np.ones((4, 4)), np.zeros((4, 4))
    inside[1:3, 1:3] = 1
    np.savez(tmp_path / "gradcam.npz", cams=np.stack([inside, uniform, empty]))
    score = rt.read_shortcut_score(tmp_path / "gradcam.npz", box)
    assert score["shortcut_score"] == pytest.approx((0 + 0.75) / 2)
    assert score["shortcut_above_uniform"] == 0.0  # a uniform map is not above itself
    assert score["shortcut_no_map"] == pytest.approx(1 / 3)
    assert (score["cam_cells"], score["cam_informative"]) == ("4x4", True)


def test_software_counts_the_runs_of_each_package_set():
    runs = pd.DataFrame({"status": ["ok", "ok", "ok", "missing"],
                         "software": ['{"tf": "2.21"}', '{"tf": "2.20"}', '{"tf": "2.21"}', None]})
    assert rt.software(runs) == [{"packages": {"tf": "2.21"}, "runs": 2}, {"packages": {"tf": "2.20"}, "runs": 1}]
    assert rt.software(runs[runs["status"] == "missing"]) == []


def test_csv_boolean_reads_what_to_csv_writes():
    assert [rt.csv_boolean(text) for text in ("True", "False", "")] == [True, False, None]
    with pytest.raises(KeyError):
        rt.csv_boolean("yes")


def test_read_test_groups_gives_each_test_image_its_patient_or_none_without_groups(tmp_path):
    split = pd.DataFrame({"path": ["t/1.png", "t/2.png", "t/3.png"], "label": ["a", "b", "a"],
                          "group": ["p1", "p2", "p1"]})
    split.to_csv(tmp_path / "grouped.csv", index=False)
    assert rt.read_test_groups(str(tmp_path / "grouped.csv"), ["t/3.png", "t/2.png"]).tolist() == ["p1", "p2"]
    split.assign(group="").to_csv(tmp_path / "ungrouped.csv", index=False)
    assert rt.read_test_groups(str(tmp_path / "ungrouped.csv"), ["t/1.png"]) is None
