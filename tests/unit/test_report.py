"""The report's reading and formatting by hand: the aggregate tables as written, numbers
and intervals, titles, the Grad-CAM image choice and explained layers, split counts, the weights table."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scripts.plan.grid import config_title
from scripts.report import qualifiers, report, view
from scripts.report import tables as report_tables


def test_read_tables_keeps_identifiers_as_text_and_only_empty_cells_missing(tmp_path):
    (tmp_path / "runs.csv").write_text(
        "model,label,slurm_job_id,cuda_visible_devices,cam_cells,f1_macro\n"
        "vgg16,NA,0012345,0,8x8,0.5\n"
        "resnet50,None,,1,4x4,\n")
    (tmp_path / "summary.csv").write_text("")  # no finished run: the aggregate stage writes no columns
    (tmp_path / "verdict.json").write_text(json.dumps({"finished": 1, "chosen": None}))
    tables = report_tables.read_tables({name: str(tmp_path / f"{name}.csv") for name in ("runs", "summary")}
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
    assert view.number(value, digits) == expected


@pytest.mark.parametrize("low, high, options, expected", [
    (-0.2, 1.3, {}, "[0.000, 1.000]"),  # a metric's interval is clipped to its range
    (-0.2, 1.3, {"bounded": False}, "[-0.200, 1.300]"),  # a difference is not
    (0.25, 30.0, {"top": 20.0, "digits": 1}, "[0.2, 20.0]"),
    (None, 0.5, {}, "n/a"),
    (0.1, float("nan"), {}, "n/a"),
])
def test_interval(low, high, options, expected):
    assert view.interval(low, high, **options) == expected


def test_kept_epochs_listed_for_a_few_seeds_counted_for_many():
    assert view.kept_epochs("2 0 –") == "2 0 –"
    assert view.kept_epochs(" ".join(["2"] * 150 + ["1", "–", "–"])) == "2 ×150, – ×2, 1 ×1"


def test_titles_name_weights_and_share_of_train_only_where_they_apply():
    assert config_title({"model": "vgg16", "strategy": "partial", "weights": "imagenet", "fraction": "0.25"}) == (
        "vgg16 · partial · weights imagenet · 25% of train")
    assert config_title({"model": "scratch_cnn", "strategy": "scratch", "weights": "none", "fraction": 1.0}) == (
        "scratch_cnn · scratch")
    assert config_title({"model": "resnet50", "strategy": "full", "weights": "hed", "fraction": "0.5"},
                        with_fraction=False) == "resnet50 · full · weights hed"


def test_gradcam_images_per_class_hardest_first_then_the_most_often_right():
    """Correct in 2 configurations: a1 2, a2 0, a3 1, b1 2, b2 2. Class a: a2 (hardest),
    then a1; class b has no image any configuration got wrong: b1, b2 (by path)."""
    paths, labels = ["a1", "a2", "a3", "b1", "b2"], ["a", "a", "a", "b", "b"]
    predicted = [["a", "b", "a", "b", "b"], ["a", "b", "b", "b", "b"]]
    configs = [{"table": pd.DataFrame({"path": paths, "label": labels, "predicted": p}).set_index("path")}
               for p in predicted]
    assert view.choose_gradcam_images(configs, ["a", "b"], 2) == ["a2", "a1", "b1", "b2"]
    assert view.choose_gradcam_images(configs, ["a", "b"], 1) == ["a2", "b1"]
    assert view.choose_gradcam_images([], ["a", "b"], 2) == []


def test_explained_layers_once_per_model_with_the_cells_of_its_maps():
    def config(model, strategy, layer, cells):
        return {"key": {"model": model, "strategy": strategy}, "cam_layer": layer,
                "cams": {"x.png": np.zeros((cells, cells), np.float16)}}

    configs = [config("vgg16", "frozen", "block4_conv3", 8), config("resnet50", "full", "conv3_block4_out", 8),
               config("vgg16", "partial", "block4_conv3", 8), config("scratch_cnn", "scratch", "block4_relu", 16)]
    assert view.explained_layers(configs) == [
        {"model": "resnet50", "layer": "conv3_block4_out", "cells": "8x8"},
        {"model": "scratch_cnn", "layer": "block4_relu", "cells": "16x16"},
        {"model": "vgg16", "layer": "block4_conv3", "cells": "8x8"}]
    assert view.explained_layers([{**configs[0], "cams": {}}]) == []  # no test image, no map


def test_split_counts_per_subset_and_class(tmp_path):
    pd.DataFrame({"path": [f"{i}.png" for i in range(7)], "label": ["a", "a", "b", "a", "b", "b", "a"],
                  "subset": ["train", "train", "train", "val", "test", "test", "dropped"],
                  "val_source": "held out"}).to_csv(tmp_path / "split.csv", index=False)
    assert report_tables.split_counts(str(tmp_path / "split.csv")) == {
        "counts": {"dropped": {"a": 1, "b": 0}, "test": {"a": 0, "b": 2}, "train": {"a": 2, "b": 1},
                   "val": {"a": 1, "b": 0}},
        "val_source": "held out", "n_test": 2, "groups": None}
    assert report_tables.split_counts(str(tmp_path / "none.csv")) == {"counts": {}, "val_source": None, "n_test": None,
                                                              "groups": None}
    split = pd.read_csv(tmp_path / "split.csv").assign(group=["p1", "p1", "p2", "p3", "p4", "p4", "p5"])
    split.to_csv(tmp_path / "grouped.csv", index=False)
    assert report_tables.split_counts(str(tmp_path / "grouped.csv"))["groups"] == {
        "train": 2, "val": 1, "test": 1, "dropped": 1}


def test_weights_table_and_backbones_that_ran_without_pretraining():
    runs = pd.DataFrame({
        "model": ["vgg16", "vgg16", "resnet50", "densenet121", "scratch_cnn"],
        "strategy": ["partial", "full", "partial", "partial", "scratch"],
        "weights": ["imagenet"] * 4 + ["none"],
        "status": ["ok", "ok", "ok", "missing", "ok"],
        "weights_source": ["https://x/vgg16.h5", "https://x/vgg16.h5", "none", "https://x/d.h5", "none"],
        "weights_sha256": ["ab", "ab", None, "cd", None]})
    assert view.not_pretrained(runs) == ["resnet50"]
    assert view.weights_table(runs) == [
        {"model": "resnet50", "weights": "imagenet", "weights_source": "none", "weights_sha256": None},
        {"model": "vgg16", "weights": "imagenet", "weights_source": "https://x/vgg16.h5", "weights_sha256": "ab"}]
    runs["weights_trust_on_first_use"] = [False, False, False, False, False]
    runs.loc[runs["model"] == "vgg16", "weights_trust_on_first_use"] = True  # no published hash
    assert view.weights_table(runs)[1]["weights_trust_on_first_use"] is True
    assert view.weights_table(pd.DataFrame()) == [] and view.not_pretrained(pd.DataFrame()) == []


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
    "correlation": [1.0, 0.8612, 0.41], "identical": [True, False, False], "near_duplicate": [True, True, False],
    "group": "", "group_in_training": False})


def render_data_checks(tmp_path, policy: str, groups: list[str] | None) -> str:
    """The report of one hand-made run on a dataset with three test images, two of them
    copies (:data:`LEAKAGE_TABLE`), and a split whose images belong to the patients
    ``groups`` (train, val, then the three test images; None: no groups declared), the
    copies left out of it under ``policy`` drop."""
    from conftest import fake_plan

    from scripts.stats.aggregate import aggregate

    plan = fake_plan(tmp_path, ["a", "b"], [("scratch_cnn", "scratch", "none", 1)])
    plan["config"]["data"]["leakage"] = policy
    files = plan["datasets"]["tiny"]
    Path(files["split"]).parent.mkdir(parents=True)
    Path(files["leakage"]).parent.mkdir(parents=True)
    patients = groups or [""] * 5
    split = pd.DataFrame({"path": ["train/a/1.png", "train/b/4.png", *LEAKAGE_TABLE["path"]],
                          "label": ["a", "b", *LEAKAGE_TABLE["label"]], "sha256": list("12345"),
                          "split": ["train", "train", "test", "test", "test"],
                          "subset": ["train", "val", *(["dropped"] * 2 if policy == "drop" else ["test"] * 2), "test"],
                          "train_rank": [0, -1, -1, -1, -1],
                          "val_source": "held out", "group": patients})
    split.to_csv(files["split"], index=False)
    pool = set(patients[:2]) - {""}
    LEAKAGE_TABLE.assign(group=patients[2:], group_in_training=[g in pool for g in patients[2:]]).to_csv(
        files["leakage"], index=False)
    Path(files["verify"]).write_text(json.dumps({
        "root": "data", "manifest": "data.sha256", "manifest_sha256": "0" * 64, "verified": "passed", "n_images": 5,
        "classes": ["a", "b"], "counts": {"test": {"a": 2, "b": 1}, "train": {"a": 1, "b": 1}}, "duplicates": [],
        "leakage_policy": policy}))
    tables = aggregate(plan)
    report.render(plan, {"runs": tables["runs"], "summary": pd.DataFrame(), "comparisons": pd.DataFrame(),
                         "verdict": json.loads(json.dumps(tables["verdict"]))}, tmp_path / "r.html")
    return (tmp_path / "r.html").read_text()


class _Seen(HTMLParser):
    """What a reader of the page sees, whatever the line breaks of the HTML: its text with
    whitespace collapsed, and per element its tag, class, id and text."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}

    def __init__(self):
        super().__init__()
        self.chunks, self.open, self.elements, self.rows = [], [], [], []

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            return
        attrs = dict(attrs)
        self.open.append((tag, attrs.get("class"), attrs.get("id"), len(self.chunks)))
        if tag == "tr":
            self.rows.append([])

    def handle_endtag(self, tag):
        if tag not in [element[0] for element in self.open]:
            return  # closes an element opened before the part of the page fed
        while self.open:
            name, cls, id_, start = self.open.pop()
            text = _collapsed("".join(self.chunks[start:]))
            self.elements.append({"tag": name, "class": cls, "id": id_, "text": text})
            if name in ("td", "th") and self.rows:
                self.rows[-1].append(text)
            if name == tag:
                return

    def handle_data(self, data):
        self.chunks.append(data)

    @property
    def text(self) -> str:
        return _collapsed("".join(self.chunks))

    def by_id(self, id_: str) -> str:
        return next(e["text"] for e in self.elements if e["id"] == id_)

    def texts(self, tag: str | None = None, cls: str | None = None) -> list[str]:
        return [e["text"] for e in self.elements if tag in (None, e["tag"]) and cls in (None, e["class"])]


def _collapsed(text: str) -> str:
    return " ".join(text.split())


def seen(html: str) -> _Seen:
    page = _Seen()
    page.feed(html)
    page.close()
    return page


def data_checks(html: str) -> _Seen:
    """The page from the first dataset's data checks heading on."""
    return seen(html.split('id="data-1"', 1)[1].split(">", 1)[1])


def test_the_report_counts_the_patients_and_lists_those_in_training_and_test(tmp_path):
    html = render_data_checks(tmp_path, "warn", ["p1", "p2", "p1", "p4", "p4"])
    page, checks = seen(html), data_checks(html)
    assert "3 test images of 2 patients" in page.text
    assert (page.texts("span", "n-test"), page.texts("span", "n-test-patients")) == (["3"], ["2"])
    assert "Patients (groups by datasets.tiny.groups): 1 in train, 1 in val, 2 in test;" in checks.text
    assert "datasets.tiny.groups" in checks.texts("code")
    assert "the validation hold-out takes whole patients" in checks.text
    assert "1 of 2 test patients also have training or validation images" in checks.texts("strong")
    assert ["p1", "1", "test/a/1.png"] in checks.rows
    assert "different patient" not in page.text and page.by_id("data-1") == "Data checks"


def test_without_groups_the_report_says_it_assumed_one_image_per_patient(tmp_path):
    html = render_data_checks(tmp_path, "drop", None)
    page, checks = seen(html), data_checks(html)
    assert ("1 test images (no patient groups declared: each image assumed to be a different patient)"
            in page.text)
    assert page.texts("span", "one-image-per-patient")[0] == (
        "no patient groups declared: each image assumed to be a different patient")
    assert ("No patient groups are declared (datasets.tiny.groups): every image is assumed to come from a "
            "different patient") in checks.text
    assert checks.by_id("one-image-per-patient-1").startswith("No patient groups are declared")
    assert "test patients also have" not in checks.text


def test_test_copies_kept_by_choice_are_flagged_beside_the_test_count(tmp_path):
    """``leakage: warn`` is an opt-in: the headline's test count says the copies are in it."""
    page = seen(render_data_checks(tmp_path, "warn", None))
    assert page.texts("span", "warn-inline")[0] == (
        "(including 2 copies of training images, kept by data.leakage: warn: see data checks)")
    assert "data.leakage: warn" in page.texts("code") and "data checks" in page.texts("a")
    dropped = seen(render_data_checks(tmp_path / "drop", "drop", None)).text
    assert "(2 copies of training images removed: see" in dropped and "kept by" not in dropped


def test_leakage_section_lists_the_copies_with_their_partners_and_the_policy(tmp_path):
    LEAKAGE_TABLE.to_csv(tmp_path / "leakage.csv", index=False)
    section = report_tables.leakage_section(str(tmp_path / "leakage.csv"), "drop")
    assert (section["policy"], section["n_checked"], section["n_identical"]) == ("drop", 3, 1)
    assert [(c["path"], c["most_similar"], c["identical"]) for c in section["copies"]] == [
        ("test/a/1.png", "train/a/1.png", True), ("test/a/2.png", "val/a/7.png", False)]
    assert report_tables.leakage_section(str(tmp_path / "none.csv"), "drop") is None


@pytest.mark.parametrize("policy, said, emphasised", [
    ("drop", "They were removed from the test set (data.leakage: drop), the same images for every seed: "
             "every test metric is on the other 1 test images.", "removed from the test set"),
    ("warn", "They were kept in the test set, by choice (data.leakage: warn): every test metric includes "
             "them and is optimistic for these images", "They were kept in the test set, by choice"),
])
def test_the_data_checks_list_the_test_copies_and_what_the_policy_did(tmp_path, policy, said, emphasised):
    checks = data_checks(render_data_checks(tmp_path, policy, None))
    assert ("2 of 3 test images are copies of training or validation images: 1 byte-identical, 1 the same "
            "radiograph re-encoded or transformed (high-pass correlation ≥ 0.8 at 64 px after alignment for crops "
            "up to 10% per side or from one edge, padding, shifts, rotations up to 10°, mirroring, inversion") in (
        checks.text)
    assert "2 of 3 test images are copies of training or validation images" in checks.texts("strong")
    assert said in checks.text and emphasised in checks.texts("strong")
    assert f"data.leakage: {policy}" in checks.texts("code")
    assert ["test/a/2.png", "val/a/7.png (val)", "0.86", "re-encoded or transformed"] in checks.rows
    assert "test/b/3.png" not in checks.text


def test_the_learning_curve_states_the_validation_images_every_size_also_uses(tmp_path):
    """Training fractions shrink the training images only; the validation images (here 3 of
    a 12-image pool) are held out first and used at every size: the section states both."""
    pd.DataFrame({"path": [f"{i}.png" for i in range(14)], "label": ["a", "b"] * 7,
                  "subset": ["train"] * 9 + ["val"] * 3 + ["test"] * 2, "val_source": "held out"}
                 ).to_csv(tmp_path / "split.csv", index=False)
    split = report_tables.split_counts(str(tmp_path / "split.csv"))
    assert view.validation_pool(split) == {"images": 3, "pool": 12, "share": 0.25}
    assert view.validation_pool({"counts": {}, "val_source": None, "n_test": None}) is None
    curve = pd.DataFrame([
        {"dataset": "d", "model": model, "strategy": strategy, "weights": weights, "fraction": fraction,
         "n_train": 9 * fraction, "n_seeds": 3, "metric": "f1_macro", "value": 0.5, "seed_low": 0.4,
         "seed_high": 0.6, "test_low": 0.4, "test_high": 0.6, "n_pairs": 3, "difference": 0.0, "low": -0.1,
         "high": 0.1, "p_holm": 1.0, "beats": False}
        for model, strategy, weights in (("scratch_cnn", "scratch", "none"), ("vgg16", "frozen", "imagenet"))
        for fraction in (0.5, 1.0)])
    verdict = {"learning_curve": {"metric": "f1_macro", "rule": "rule", "fractions": [0.5, 1.0], "statements": []}}
    section = view.learning_section("d", {"learning_curve": curve}, verdict, split)
    assert section["validation"] == {"images": 3, "pool": 12, "share": 0.25}


def test_each_pretraining_source_says_what_its_weights_are():
    """The report names what a source's weights are: the config's description for a
    named source (the demo's "HED-retrained VGG16, not ImageNet"), a fixed one for
    the built-in sources, nothing for an undescribed file."""
    hed = {"name": "hed_vgg16", "description": "HED-retrained VGG16, not ImageNet",
           "source": {"vgg16": {"path": "resources/weights/vgg16_hed_notop.h5"}}}
    assert view.source_descriptions(["none", hed, "imagenet", {"name": "rad", "source": "/w.h5"}]) == {
        "none": "random initialisation: not pretrained", "hed_vgg16": "HED-retrained VGG16, not ImageNet",
        "imagenet": "Keras ImageNet weights", "rad": ""}
    assert view.source_descriptions({"vgg16": "/w.h5"}) == {"custom": ""}


# --- the decision, the contents and the folded grids, on a rendered study of hand-made runs ---------

@pytest.fixture(scope="module")
def study_html(tmp_path_factory) -> str:
    from report_study import hand_made_report

    return hand_made_report(tmp_path_factory.mktemp("study")).read_text()


class _Page(HTMLParser):
    """The ids of headings and sections, whether a heading lacks one, the contents' links,
    every element id, and each <details> with whether it is open and the images inside it."""

    def __init__(self):
        super().__init__()
        self.headings, self.unnamed, self.links, self.ids, self.details, self.images = [], [], [], set(), [], []
        self.in_nav, self.open_details = False, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag in ("h2", "h3", "section"):
            (self.headings.append(attrs["id"]) if "id" in attrs else self.unnamed.append(tag))
        if tag == "nav":
            self.in_nav = True
        if tag == "a" and self.in_nav:
            self.links.append(attrs["href"].removeprefix("#"))
        if tag == "details":
            self.open_details.append({"open": "open" in attrs, "images": []})
        if tag == "img":
            self.images.append((attrs["alt"], [d["open"] for d in self.open_details]))

    def handle_endtag(self, tag):
        if tag == "nav":
            self.in_nav = False
        if tag == "details":
            self.details.append(self.open_details.pop())


def parsed(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def test_every_heading_and_section_is_in_the_contents_and_every_link_lands(study_html):
    page = parsed(study_html)
    assert page.unnamed == []  # a heading without an id could not be in the contents
    assert [h for h in page.headings if h not in page.links] == []
    assert [link for link in page.links if link not in page.ids] == []
    for section in ("learning", "external"):  # absent here: one fraction, no external test set
        assert not any(h.startswith(section) for h in page.headings)
    for section in ("decision", "chosen-1", "configurations-1", "baseline-1", "calibration-1", "shortcut-1",
                    "weights-comparison-1", "roc-1", "gradcam-1", "samples-1", "data-1", "runs-1", "configuration"):
        assert section in page.links, section


def test_the_per_configuration_grids_are_folded_away(study_html):
    page = parsed(study_html)
    folded = {alt for alt, inside in page.images if inside and not any(inside)}
    assert {"ROC curves", "precision-recall curves", "confusion matrices", "loss curves", "accuracy curves",
            "reliability diagrams", "mean Grad-CAM maps with the lung box"} <= folded
    assert any(alt.startswith("Grad-CAM ") for alt in folded)
    shown = {alt for alt, inside in page.images if not inside}
    assert {"macro-F1 per strategy and seed", "AUC per strategy and seed"} <= shown


def test_the_decision_comes_first_with_every_warning_that_qualifies_it(study_html):
    html = study_html
    decision = html.split('<section id="decision">')[1].split("</section>")[0]
    assert html.index('<section id="decision">') < html.index('id="contents"') < html.index('<h2 id="ds-1">')
    assert '<strong class="decision-chosen">vgg16 · frozen · weights imagenet</strong>' in decision
    assert "Macro-F1</td><td>0.650</td>" in decision and "(2 seeds paired)" in decision
    kinds = re.findall(r'<li class="qualifier-(\w+)"><strong>([^<]+)</strong>', decision)
    assert kinds == [("warn", "seeds"), ("warn", "validation → test"), ("warn", "leakage"), ("warn", "shortcut"),
                     ("note", "calibration")]
    assert ("validation overestimates this configuration by more than choosing the best on validation explains; "
            "the test set may differ from the validation data" in decision)
    assert "choosing the best of 3 explains up to" in decision
    assert "2 of 20 test images are copies of training or validation images, kept in the test set" in decision
    verdict = html.split('class="verdict"')[1]
    assert 'id="overestimated-1"' in verdict and "The choice stays the validation's." in verdict


def test_the_summary_shows_the_change_from_validation_to_test_per_configuration(study_html):
    html = study_html
    table = html.split('<table class="summary">')[1].split("</table>")[0]
    assert "<th>test − validation Macro-F1</th>" in table
    changes = [float(x) for x in re.findall(r'<td class="val-test">([-+0-9.]+)</td>', table)]
    assert len(changes) == 3 and min(changes) < -0.2  # vgg16 frozen · imagenet: 0.95 on validation, 0.65 on test


def test_decision_warnings_from_hand_built_sections():
    chosen = {"model": "vgg16", "strategy": "frozen", "weights": "imagenet", "fraction": 1.0, "n_seeds": 1,
              "ece": 0.1, "ece_seed_low": np.nan, "ece_seed_high": np.nan, "brier": 0.2, "ece_scaled": 0.05,
              "temperature": 100.0, "shortcut_score": 0.3, "cam_cells": "2x2", "cam_informative": False}
    d = {"index": 2, "verdict": {"chosen": chosen, "too_few_seeds": True, "shortcut": {
        "chosen_flagged": False, "flagged": [], "threshold": 0.4}}, "missing": [{"seed": 3}],
        "leakage": {"copies": [], "n_checked": 5, "policy": "warn", "shared_groups": [], "n_test_groups": 0},
        "external": []}
    study = {"not_pretrained": ["vgg16"]}
    assert qualifiers.seeds_warnings(d, study)[0]["text"].startswith("1 seed: too few to conclude; the interval over "
                                                                  "seeds is undefined.")
    assert qualifiers.pretraining_warnings(d, study)[0]["level"] == "warn"
    assert qualifiers.pretraining_warnings(d, {"not_pretrained": ["resnet50"]})[0]["level"] == "note"
    random_init = {**d, "verdict": {**d["verdict"], "chosen": {**chosen, "weights": "none"}}}
    # another source ran
    assert qualifiers.pretraining_warnings(random_init, {"not_pretrained": []})[0]["level"] == "warn"
    assert qualifiers.leakage_warnings(d, study) == []
    shared = {**d["leakage"], "shared_groups": [{"group": "p1", "n_test": 2, "paths": "a b"}], "n_test_groups": 4}
    kept = qualifiers.leakage_warnings({**d, "leakage": shared}, study)[0]
    assert kept["level"] == "warn" and kept["text"] == (
        "2 test images belong to 1 of 4 test patients who also have training or validation images, kept in the "
        "test set: its metrics are optimistic for them.")
    dropped = qualifiers.leakage_warnings({**d, "leakage": {**shared, "policy": "drop"}}, study)[0]
    assert dropped["level"] == "note" and dropped["text"].endswith("; they were removed from the test set.")
    assert qualifiers.leakage_warnings({**d, "leakage": None}, study)[0]["text"] == (
        "the check for test images that are copies of training images did not run.")
    assert "(2x2 cells) cannot locate anything" in qualifiers.shortcut_warnings(d, study)[0]["text"]
    calibration = qualifiers.calibration_warnings(d, study)[0]
    assert calibration["level"] == "warn" and "search bound" in calibration["text"]
    assert qualifiers.missing_runs_warnings(d, study)[0] == {
        "kind": "failed runs", "text": "1 run failed or did not finish and is not in the numbers.",
        "link": "runs-2", "level": "warn"}
    assert qualifiers.validation_drop_warnings(d, study) == []  # no verdict on it: nothing said


def test_a_calibration_slope_without_a_usable_fit_is_a_dash_that_says_why(tmp_path, monkeypatch):
    """One configuration with no usable calibration fit on any seed, one with a fit on one
    of its two seeds: a dash whose title says why, and the number of seeds the mean is over;
    never "nan"."""
    import report_study

    from scripts.stats.aggregate import aggregate

    tables_seen = []

    def with_unusable_fits(plan):
        tables = aggregate(plan)
        tables_seen.append(tables)
        summary = tables["summary"]
        none, one = summary.index[:2]
        for value in ("calibration_slope", "calibration_intercept"):
            summary.loc[none, [value, f"{value}_seed_low", f"{value}_seed_high"]] = np.nan
            summary.loc[one, [f"{value}_seed_low", f"{value}_seed_high"]] = np.nan
            summary.loc[none, f"{value}_n"], summary.loc[one, f"{value}_n"] = 0, 1
        return tables

    monkeypatch.setattr(report_study, "aggregate", with_unusable_fits)
    html = report_study.hand_made_report(tmp_path).read_text()
    table = html[html.index('id="calibration-table-1"'):]
    table = table[:table.index("</table>")]
    assert "nan" not in table.lower()
    assert table.count('title="no seed gives a calibration fit with a usable standard error">–') == 2
    assert table.count("(mean of the 1 of 2 seeds with a fit; survivor bias)") == 1
    assert table.count('class="ci calibrated-ece"') == len(tables_seen[0]["summary"])


def test_ece_stands_beside_what_a_calibrated_model_scores_and_miscalibrated_only_above_it(tmp_path, monkeypatch):
    """Two configurations' ECE set just above and just below their calibrated reference's
    95th percentile: only the first is called miscalibrated, in the table and the verdict."""
    import report_study

    from scripts.report import qualifiers
    from scripts.stats.aggregate import aggregate

    def around_the_reference(plan):
        tables = aggregate(plan)
        summary = tables["summary"]
        above, below = summary.index[:2]
        summary.loc[above, "ece"] = summary.loc[above, "ece_calibrated_high"] + 0.01
        summary.loc[below, "ece"] = summary.loc[below, "ece_calibrated_high"] - 0.01
        return tables

    monkeypatch.setattr(report_study, "aggregate", around_the_reference)
    html = report_study.hand_made_report(tmp_path).read_text()
    table = html[html.index('id="calibration-table-1"'):]
    table = table[:table.index("</table>")]
    assert table.count('class="ci calibrated-ece"') >= 2 and table.count('class="miscalibrated"') == 1
    chosen = {"ece": 0.2, "ece_seed_low": 0.1, "ece_seed_high": 0.3, "brier": 0.4, "ece_calibrated": 0.12,
              "ece_calibrated_high": 0.18}
    text = qualifiers.calibration_warnings({"verdict": {"chosen": chosen}, "index": 1}, {})[0]["text"]
    assert text.startswith("ECE 0.200")
    assert "(miscalibrated: calibrated models with these probabilities score 0.120" in text
    calm = qualifiers.calibration_warnings({"verdict": {"chosen": {**chosen, "ece": 0.15}}, "index": 1}, {})[0]
    assert "(within what a calibrated model scores:" in calm["text"]
