"""scripts/plan/study.py: the rules' input functions, parameters and time limits, without Snakemake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_config import REGISTRY, study

from scripts.common.layout import FINISHED_RUN, PACK_RECORD, RUN_DIR, RUN_FILES
from scripts.plan import grid
from scripts.plan.study import Study, named_paths
from scripts.site.slurm_site import PACKING


def planned(tmp_path, monkeypatch, packing=None, **settings) -> Study:
    tmp_path.mkdir(exist_ok=True)
    monkeypatch.chdir(tmp_path)
    return Study(study(tmp_path, **settings), REGISTRY, {**PACKING, **(packing or {})},
                 {"files": [], "user_set": []})


class Wildcards(dict):
    """What Snakemake hands an input function: the names as keys and as attributes."""

    __getattr__ = dict.__getitem__


PACK = {"dataset": "tiny", "model": "scratch_cnn", "strategy": "scratch", "weights": "none", "fraction": "1.0"}


def test_a_config_problem_is_one_error_naming_its_key(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"invalid configuration:\n  evaluation.lung_box"):
        planned(tmp_path, monkeypatch, evaluation={"lung_box": [0.9, 0.1, 0.1, 0.9]})


def test_aggregate_waits_for_every_pack_record_one_run_each_locally(tmp_path, monkeypatch):
    alone = planned(tmp_path, monkeypatch, seeds=[1, 2, 3])
    assert len(alone.pack_records()) == 9  # 3 configurations x 3 seeds
    assert alone.pack_records()[:2] == [PACK_RECORD.format(**PACK, seeds=label) for label in ("1-1", "2-2")]
    packed = planned(tmp_path / "packed", monkeypatch, packing={"runs_per_job": 2}, seeds=[1, 2, 3])
    assert packed.pack_records()[:2] == [PACK_RECORD.format(**PACK, seeds=label) for label in ("1-2", "3-3")]


def test_pack_members_name_each_seeds_files(tmp_path, monkeypatch):
    packed = planned(tmp_path, monkeypatch, packing={"runs_per_job": 4}, seeds=[1, 2])
    members = json.loads(packed.pack_members(Wildcards(PACK, seeds="1-2")))
    assert [m["seed"] for m in members] == [1, 2]
    run = RUN_DIR.format(**PACK, seed=2)
    assert members[1]["outputs"] == {name: f"{run}/{file}" for name, file in RUN_FILES.items()}
    assert members[1]["checkpoint"] == f"{run}/checkpoint" and members[1]["split"] == "results/tiny/splits/seed2.csv"


def finish(planned_study: Study, run: dict, wall_seconds: float, **changed) -> None:
    """Write the run's finished record as the train step writes it (``changed``: what
    differs from the run as planned now, e.g. its settings)."""
    names = Wildcards(run)
    images = Path(planned_study.images_cache(names))
    if not images.exists():
        images.parent.mkdir(parents=True, exist_ok=True)
        images.write_bytes(b"decoded")
    identity = {"run": {**run, "fraction": float(run["fraction"])},
                "settings": json.loads(planned_study.run_settings(names)), "images": str(images),
                "images_bytes": images.stat().st_size, "split_sha256": "any",
                "external_tests": json.loads(planned_study.external_settings(names)), **changed}
    record = Path(RUN_DIR.format(**run)) / FINISHED_RUN
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"identity": identity, "wall_seconds": wall_seconds}))


def test_a_pack_is_sized_from_the_site_value_then_from_its_finished_runs(tmp_path, monkeypatch):
    packed = planned(tmp_path, monkeypatch, packing={"runs_per_job": 4, "run_minutes": 10, "max_runtime": 100},
                     seeds=[1, 2, 3, 4])
    pack = Wildcards(PACK, seeds="1-4")
    before = packed.pack_runtime(pack, attempt=1)
    finish(packed, {**PACK, "seed": 1}, wall_seconds=120)
    after = packed.pack_runtime(pack, attempt=1)
    assert packed.measured_run_minutes(packed.pack_runs(pack)) == 2
    assert before > after  # 4 runs at the site's 10 min, then 3 runs at 1.5 x 2 min
    assert packed.pack_runtime(pack, attempt=3) <= 100  # capped at the partition's limit


def test_a_run_finished_with_other_settings_neither_sizes_the_pack_nor_counts_as_finished(tmp_path, monkeypatch):
    study_now = planned(tmp_path, monkeypatch, packing={"runs_per_job": 2, "run_minutes": 10},
                        seeds=[1, 2], training={"epochs": 20})
    pack = Wildcards(PACK, seeds="1-2")
    smoke = json.loads(study_now.run_settings(pack))
    smoke["training"]["epochs"] = 1  # a smoke test of seed 1 before the study
    finish(study_now, {**PACK, "seed": 1}, wall_seconds=6, settings=smoke)
    assert study_now.measured_run_minutes(study_now.pack_runs(pack)) is None
    assert study_now.current_record({**PACK, "seed": 1}) is None
    assert study_now.pack_runtime(pack, attempt=1) == 1 + 2 * 10  # both seeds at the site's run_minutes
    finish(study_now, {**PACK, "seed": 1}, wall_seconds=120)  # seed 1 trained as planned now
    assert study_now.pack_runtime(pack, attempt=1) == 1 + 1 * 3  # one run left at 1.5 x 2 min


def test_a_record_of_other_images_or_another_seed_is_not_current(tmp_path, monkeypatch):
    study_now = planned(tmp_path, monkeypatch, seeds=[1, 2])
    run = {**PACK, "seed": 1}
    finish(study_now, run, wall_seconds=60)
    record = json.loads((Path(RUN_DIR.format(**run)) / FINISHED_RUN).read_text())["identity"]
    args = (json.loads(study_now.run_settings(Wildcards(run))), study_now.images_cache(Wildcards(run)), [])
    assert grid.is_current(record, run, *args)
    assert not grid.is_current(record, {**run, "seed": 2}, *args)
    assert not grid.is_current({**record, "images_bytes": 1}, run, *args)  # the images were decoded again
    assert not grid.is_current(None, run, *args)  # a record without an identity


def test_dataset_inputs_and_parameters(tmp_path, monkeypatch):
    planned_study = planned(tmp_path, monkeypatch)
    tiny = Wildcards(dataset="tiny")
    assert planned_study.manifest_input(tiny) == [str(tmp_path / "data.sha256")]
    assert planned_study.kaggle_marker(tiny) == [] and planned_study.group_table(tiny) == []
    assert planned_study.positive_class(tiny) == "" and json.loads(planned_study.dataset_groups(tiny)) == {}
    assert ("train/A/a.png", 1) in planned_study.dataset_listing(tiny)
    assert planned_study.images_cache(tiny) == "results/tiny/data/images_224px.npy"  # the schema default


def test_weights_inputs_come_from_the_registry_or_nothing(tmp_path, monkeypatch):
    imagenet = planned(tmp_path, monkeypatch, weights="imagenet")
    assert imagenet.weights_input(Wildcards(model="vgg16", weights="imagenet")) == [
        f"{imagenet.config['weights_cache']}/vgg16_notop.h5"]
    assert imagenet.weights_input(Wildcards(model="scratch_cnn", weights="none")) == []
    assert imagenet.registry_entry(Wildcards(file_name="resnet50_notop.h5")) == REGISTRY["resnet50"]
    with pytest.raises(ValueError, match="other.h5 is not in"):
        imagenet.registry_entry(Wildcards(file_name="other.h5"))


def test_named_paths_pass_the_named_files_as_json():
    paths = named_paths("output", ["b"])
    assert json.loads(paths(None, {}, {"a": "x.csv", "b": "y.csv"})) == {"b": "y.csv"}


def test_a_pack_that_cannot_finish_within_max_runtime_stops_the_planning(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"(?s)4 runs .* 10 min a run .*needs 41 min, more than "
                                         r"set-resources.train.max_runtime 30 min: lower "
                                         r"set-resources.train.runs_per_job to at most 2"):
        planned(tmp_path, monkeypatch, packing={"runs_per_job": 4, "run_minutes": 10, "max_runtime": 30},
                seeds=[1, 2, 3, 4])
    side_by_side = planned(tmp_path / "fits", monkeypatch, seeds=[1, 2, 3, 4],
                           packing={"runs_per_job": 4, "runs_at_once": 2, "run_minutes": 10, "max_runtime": 30})
    assert side_by_side.pack_runtime(Wildcards(PACK, seeds="1-4"), attempt=1) == 21  # 2 turns of 2 runs


def test_a_pack_whose_measured_runs_exceed_max_runtime_is_refused_not_cut_short(tmp_path, monkeypatch):
    packed = planned(tmp_path, monkeypatch, packing={"runs_per_job": 4, "run_minutes": 5, "max_runtime": 60},
                     seeds=[1, 2, 3, 4])
    pack = Wildcards(PACK, seeds="1-4")
    finish(packed, {**PACK, "seed": 1}, wall_seconds=20 * 60)  # 1.5 x 20 min a run: 3 runs need 91 min
    with pytest.raises(ValueError, match=r"pack 1-4 of scratch_cnn · scratch: .*longest measured run.*"
                                         r"needs 91 min.*runs_per_job to at most 1"):
        packed.pack_runtime(pack, attempt=1)


def test_a_failed_workflow_names_the_runs_still_to_train_and_their_logs(tmp_path, monkeypatch):
    planned_study = planned(tmp_path, monkeypatch, seeds=[1, 2])
    lines = planned_study.unfinished_runs(shown=2)
    run = planned_study.runs[0]
    assert lines[0] == "6 of 6 runs have not finished (their logs):"
    assert lines[1] == f"  {run['dir']}: {run['log_dir']}/train.log"
    assert lines[-1] == "  ... and 4 more (results/runs.csv after a report)" and len(lines) == 4


def test_the_confirmation_packs_follow_the_verdicts_choice_and_resolve_to_their_seeds(tmp_path, monkeypatch):
    packed = planned(tmp_path, monkeypatch, packing={"runs_per_job": 2}, seeds=[1, 2, 3],
                     evaluation={"confirmation_seeds": [4, 5, 6]})
    verdict = tmp_path / "verdict.json"
    chosen = {**PACK, "model": "vgg16", "strategy": "partial", "fraction": 1.0}
    verdict.write_text(json.dumps({"datasets": {"tiny": {"chosen": chosen}}}))
    vgg16 = {**PACK, "model": "vgg16", "strategy": "partial"}
    assert packed.confirmation_pack_records(str(verdict)) == [
        PACK_RECORD.format(**configuration, seeds=label) for configuration in (vgg16, PACK) for label in ("4-5", "6-6")]
    # a confirmation pack holds confirmation seeds only; a study pack with the same range would hold study seeds
    assert [run["seed"] for run in packed.pack_runs(Wildcards(vgg16, seeds="4-5"))] == [4, 5]
    assert [run["seed"] for run in packed.pack_runs(Wildcards(vgg16, seeds="1-2"))] == [1, 2]
    with pytest.raises(ValueError, match="not both planned"):
        packed.pack_runs(Wildcards(vgg16, seeds="3-4"))
    verdict.write_text(json.dumps({"datasets": {"tiny": {"chosen": {**PACK, "fraction": 1.0}}}}))
    assert packed.confirmation_pack_records(str(verdict)) == []  # the baseline chosen: nothing to confirm


def test_without_confirmation_seeds_no_confirmation_pack_is_planned(tmp_path, monkeypatch):
    alone = planned(tmp_path, monkeypatch, seeds=[1, 2])
    verdict = tmp_path / "verdict.json"
    verdict.write_text(json.dumps({"datasets": {"tiny": {"chosen": {**PACK, "model": "vgg16", "fraction": 1.0}}}}))
    assert alone.confirmation_seeds == [] and alone.confirmation_pack_records(str(verdict)) == []
