"""The report's reading and formatting by hand: the aggregate tables as written, numbers
and intervals, titles, the Grad-CAM image choice and explained layers, split counts, the weights table."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scripts import report


def test_read_tables_keeps_identifiers_as_text_and_only_empty_cells_missing(tmp_path):
    (tmp_path / "runs.csv").write_text(
        "model,label,slurm_job_id,cuda_visible_devices,cam_cells,f1_macro\n"
        "vgg16,NA,0012345,0,8x8,0.5\n"
        "resnet50,None,,1,4x4,\n")
    (tmp_path / "summary.csv").write_text("")  # no finished run: the aggregate stage writes no columns
    (tmp_path / "verdict.json").write_text(json.dumps({"finished": 1, "chosen": None}))
    tables = report.read_tables({name: str(tmp_path / f"{name}.csv") for name in ("runs", "summary")}
                                | {"verdict": str(tmp_path / "verdict.json")})
    runs = tables["runs"]
    assert runs["slurm_job_id"][0] == "0012345" and pd.isna(runs["slurm_job_id"][1])
    assert list(runs["cuda_visible_devices"]) == ["0", "1"]
    assert list(runs["label"]) == ["NA", "None"]  # class names, not missing values
    assert runs["f1_macro"][0] == 0.5 and np.isnan(runs["f1_macro"][1])
    assert tables["summary"].empty
    assert tables["verdict"] == {"finished": 1, "chosen": None}


@pytest.mark.parametrize("value, digits, expected", [
    (None, 3, "–"), (float("nan"), 3, "–"), (0.12345, 3, "0.123"), (2, 1, "2.0"), (np.float64(0.9996), 3, "1.000"),
])
def test_number(value, digits, expected):
    assert report.number(value, digits) == expected


@pytest.mark.parametrize("low, high, options, expected", [
    (-0.2, 1.3, {}, "[0.000, 1.000]"),  # a metric's interval is clipped to its range
    (-0.2, 1.3, {"bounded": False}, "[-0.200, 1.300]"),  # a difference is not
    (0.25, 30.0, {"top": 20.0, "digits": 1}, "[0.2, 20.0]"),
    (None, 0.5, {}, "n/a"),
    (0.1, float("nan"), {}, "n/a"),
])
def test_interval(low, high, options, expected):
    assert report.interval(low, high, **options) == expected


def test_titles_name_weights_and_share_of_train_only_where_they_apply():
    assert report.title({"model": "vgg16", "strategy": "partial", "weights": "imagenet", "fraction": "0.25"}) == (
        "vgg16 · partial · weights imagenet · 25% of train")
    assert report.title({"model": "scratch_cnn", "strategy": "scratch", "weights": "none", "fraction": 1.0}) == (
        "scratch_cnn · scratch")
    assert report.config_title("resnet50", "full", "hed") == "resnet50 · full · weights hed"


def test_gradcam_images_per_class_hardest_first_then_the_most_often_right():
    """Correct in 2 configurations: a1 2, a2 0, a3 1, b1 2, b2 2. Class a: a2 (hardest),
    then a1; class b has no image any configuration got wrong: b1, b2 (by path)."""
    paths, labels = ["a1", "a2", "a3", "b1", "b2"], ["a", "a", "a", "b", "b"]
    predicted = [["a", "b", "a", "b", "b"], ["a", "b", "b", "b", "b"]]
    configs = [{"table": pd.DataFrame({"path": paths, "label": labels, "predicted": p}).set_index("path")}
               for p in predicted]
    assert report.choose_gradcam_images(configs, ["a", "b"], 2) == ["a2", "a1", "b1", "b2"]
    assert report.choose_gradcam_images(configs, ["a", "b"], 1) == ["a2", "b1"]
    assert report.choose_gradcam_images([], ["a", "b"], 2) == []


def test_explained_layers_once_per_model_with_the_cells_of_its_maps():
    def config(model, strategy, layer, cells):
        return {"key": {"model": model, "strategy": strategy}, "cam_layer": layer,
                "cams": {"x.png": np.zeros((cells, cells), np.float16)}}

    configs = [config("vgg16", "frozen", "block4_conv3", 8), config("resnet50", "full", "conv3_block4_out", 8),
               config("vgg16", "partial", "block4_conv3", 8), config("scratch_cnn", "scratch", "block4_relu", 16)]
    assert report.explained_layers(configs) == [
        {"model": "resnet50", "layer": "conv3_block4_out", "cells": "8x8"},
        {"model": "scratch_cnn", "layer": "block4_relu", "cells": "16x16"},
        {"model": "vgg16", "layer": "block4_conv3", "cells": "8x8"}]
    assert report.explained_layers([{**configs[0], "cams": {}}]) == []  # no test image, no map


def test_split_counts_per_subset_and_class(tmp_path):
    pd.DataFrame({"path": [f"{i}.png" for i in range(7)], "label": ["a", "a", "b", "a", "b", "b", "a"],
                  "subset": ["train", "train", "train", "val", "test", "test", "dropped"],
                  "val_source": "held out"}).to_csv(tmp_path / "split.csv", index=False)
    assert report.split_counts(str(tmp_path / "split.csv")) == {
        "counts": {"dropped": {"a": 1, "b": 0}, "test": {"a": 0, "b": 2}, "train": {"a": 2, "b": 1},
                   "val": {"a": 1, "b": 0}},
        "val_source": "held out", "n_test": 2}
    assert report.split_counts(str(tmp_path / "none.csv")) == {"counts": {}, "val_source": None, "n_test": None}


def test_weights_table_and_backbones_that_ran_without_pretraining():
    runs = pd.DataFrame({
        "model": ["vgg16", "vgg16", "resnet50", "densenet121", "scratch_cnn"],
        "strategy": ["partial", "full", "partial", "partial", "scratch"],
        "weights": ["imagenet"] * 4 + ["none"],
        "status": ["ok", "ok", "ok", "missing", "ok"],
        "weights_source": ["https://x/vgg16.h5", "https://x/vgg16.h5", "none", "https://x/d.h5", "none"],
        "weights_sha256": ["ab", "ab", None, "cd", None]})
    assert report.not_pretrained(runs) == ["resnet50"]
    assert report.weights_table(runs) == [
        {"model": "resnet50", "weights": "imagenet", "weights_source": "none", "weights_sha256": None},
        {"model": "vgg16", "weights": "imagenet", "weights_source": "https://x/vgg16.h5", "weights_sha256": "ab"}]
    assert report.weights_table(pd.DataFrame()) == [] and report.not_pretrained(pd.DataFrame()) == []


def test_write_figures_decodes_each_data_uri_to_a_named_file(tmp_path):
    png = b"\x89PNG\r\n\x1a\nfigure bytes"
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    report.write_figures([{"name": "tiny", "figures": {"roc": uri, "loss": uri}}, {"name": "big", "figures": {}}],
                         tmp_path / "figures")
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["tiny-loss.png", "tiny-roc.png"]
    assert (tmp_path / "figures" / "tiny-roc.png").read_bytes() == png


LEAKAGE_TABLE = pd.DataFrame({
    "path": ["test/a/1.png", "test/a/2.png", "test/b/3.png"], "label": ["a", "a", "b"],
    "most_similar": ["train/a/1.png", "val/a/7.png", "train/b/4.png"], "most_similar_split": ["train", "val", "train"],
    "correlation": [1.0, 0.8612, 0.41], "identical": [True, False, False], "near_duplicate": [True, True, False]})


def test_leakage_section_lists_the_copies_with_their_partners_and_the_policy(tmp_path):
    LEAKAGE_TABLE.to_csv(tmp_path / "leakage.csv", index=False)
    section = report.leakage_section(str(tmp_path / "leakage.csv"), "drop")
    assert (section["policy"], section["n_checked"], section["n_identical"]) == ("drop", 3, 1)
    assert [(c["path"], c["most_similar"], c["identical"]) for c in section["copies"]] == [
        ("test/a/1.png", "train/a/1.png", True), ("test/a/2.png", "val/a/7.png", False)]
    assert report.leakage_section(str(tmp_path / "none.csv"), "drop") is None


@pytest.mark.parametrize("policy, said", [
    ("drop", "They were <strong>removed from the test set</strong> (<code>data.leakage: drop</code>),\n"
             "the same images for every seed: every test metric is on the other 1\ntest images."),
    ("warn", "<strong>They were kept in the test set, by choice</strong> (<code>data.leakage: warn</code>):\n"
             "every test metric includes them and is optimistic for these images"),
])
def test_the_data_checks_list_the_test_copies_and_what_the_policy_did(tmp_path, policy, said):
    from conftest import fake_plan

    from scripts.aggregate import aggregate

    plan = fake_plan(tmp_path, ["a", "b"], [("scratch_cnn", "scratch", "none", 1)])
    plan["config"]["data"]["leakage"] = policy
    files = plan["datasets"]["tiny"]
    Path(files["leakage"]).parent.mkdir(parents=True)
    LEAKAGE_TABLE.to_csv(files["leakage"], index=False)
    Path(files["verify"]).write_text(json.dumps({
        "root": "data", "manifest": "data.sha256", "manifest_sha256": "0" * 64, "verified": "passed", "n_images": 5,
        "classes": ["a", "b"], "counts": {"test": {"a": 2, "b": 1}, "train": {"a": 1, "b": 1}}, "duplicates": [],
        "leakage_policy": policy}))
    tables = aggregate(plan)
    report.render(plan, {"runs": tables["runs"], "summary": pd.DataFrame(), "comparisons": pd.DataFrame(),
                         "verdict": json.loads(json.dumps(tables["verdict"]))}, tmp_path / "r.html")
    checks = (tmp_path / "r.html").read_text().split('id="data-1"')[1]
    assert ("<strong>2 of 3 test images\nare copies of training or validation images</strong>: "
            "1 byte-identical,\n1 the same radiograph re-encoded") in checks
    assert said in checks
    assert ('<tr><td class="l"><code>test/a/2.png</code></td><td class="l"><code>val/a/7.png</code>\n(val)</td>'
            '<td>0.86</td>\n<td class="l">re-encoded</td></tr>') in checks
    assert "test/b/3.png" not in checks


def test_each_pretraining_source_says_what_its_weights_are():
    """The report names what a source's weights are: the config's description for a
    named source (the demo's "HED-retrained VGG16, not ImageNet"), a fixed one for
    the built-in sources, nothing for an undescribed file."""
    hed = {"name": "hed_vgg16", "description": "HED-retrained VGG16, not ImageNet",
           "source": {"vgg16": {"path": "resources/weights/vgg16_hed_notop.h5"}}}
    assert report.source_descriptions(["none", hed, "imagenet", {"name": "rad", "source": "/w.h5"}]) == {
        "none": "random initialisation: not pretrained", "hed_vgg16": "HED-retrained VGG16, not ImageNet",
        "imagenet": "Keras ImageNet weights", "rad": ""}
    assert report.source_descriptions({"vgg16": "/w.h5"}) == {"custom": ""}
