"""The data steps on a small copy of the demo X-rays (3 classes, 2 train and 1 test image
each, plus a test image that is a byte copy of a training image, and for the leakage
check a re-encoded copy of another), and on a Kermany-style folder with repeated
patients: what each step writes."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import DEMO, KERMANY_GROUPS, LEAKED, SHARED_PATIENT, copy_dataset, kermany_patients

from scripts import stages
from scripts.data.images import load_image
from scripts.data.manifest import DataError, make_manifest
from scripts.stats.run_tables import read_test_groups

COLOUR = {"policy": "warn", "tolerance": 32, "min_share": 0.0005}


@pytest.fixture(scope="module")
def verified(tmp_path_factory):
    """The dataset, and its verify step's outputs and printed lines."""
    work = tmp_path_factory.mktemp("stages")
    data = copy_dataset(work / "data", {"train": 2, "test": 1})
    return {"data": data, "manifest": work / "data.sha256", "index": work / "index.csv",
            "verify": work / "verify.json", "work": work}


@pytest.fixture(scope="module")
def report(verified):
    return stages.verify("tiny", str(verified["data"]), str(verified["manifest"]), "warn", None,
                         str(verified["index"]), str(verified["verify"]))


def index_of(verified) -> pd.DataFrame:
    return pd.read_csv(verified["index"], keep_default_na=False)


def test_verify_writes_the_index_of_every_manifest_line_and_the_report(verified, report):
    manifest = dict(reversed(line.split("  ", 1)) for line in verified["manifest"].read_text().splitlines())
    index = index_of(verified)
    assert list(index.columns) == ["path", "split", "label", "sha256", "group"]
    assert set(index["group"]) == {""} and report["groups"] is None  # no groups declared
    assert dict(zip(index["path"], index["sha256"], strict=True)) == manifest
    assert list(index["split"] + "/" + index["label"]) == [p.rsplit("/", 1)[0] for p in index["path"]]
    written = json.loads(verified["verify"].read_text())
    assert written == json.loads(json.dumps(report))
    assert written["manifest_sha256"] == hashlib.sha256(verified["manifest"].read_bytes()).hexdigest()
    assert written["counts"] == {"test": {"Covid": 2, "Normal": 1, "Viral Pneumonia": 1},
                                 "train": {"Covid": 3, "Normal": 2, "Viral Pneumonia": 2}}
    assert (written["n_images"], written["positive_class"], written["verified"]) == (11, None, "passed")
    assert [g["paths"] for g in written["duplicates"] if g["cross_split"]] == [sorted(LEAKED)]


def test_verify_warns_of_leakage_by_name(verified, tmp_path, capsys):
    stages.verify("tiny", str(verified["data"]), str(verified["manifest"]), "warn", None,
                  str(tmp_path / "index.csv"), str(tmp_path / "verify.json"))
    assert "WARNING leakage: test/Covid/COVID-00012.jpg = train/Covid/COVID-00012.jpg" in capsys.readouterr().out


def test_verify_names_a_changed_file_and_writes_nothing(tmp_path):
    data = copy_dataset(tmp_path / "data", {"train": 1, "test": 1}, extra=())
    victim = sorted((data / "test" / "Viral Pneumonia").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:-10])
    changed = f"content changed since the manifest.*\n  - test/Viral Pneumonia/{victim.name}"
    with pytest.raises(DataError, match=changed):
        stages.verify("tiny", str(data), f"{data}.sha256", "warn", None, str(tmp_path / "index.csv"),
                      str(tmp_path / "verify.json"))
    assert not (tmp_path / "index.csv").exists() and not (tmp_path / "verify.json").exists()


def test_two_classes_need_a_positive_class_that_is_one_of_them(tmp_path):
    data = copy_dataset(tmp_path / "data", {"train": 1, "test": 1}, extra=())
    for split in ("train", "test"):
        shutil.rmtree(data / split / "Viral Pneumonia")
    (tmp_path / "data.sha256").write_text(make_manifest(data))

    def verify(dataset: str, positive: str | None) -> dict:
        return stages.verify(dataset, str(data), str(tmp_path / "data.sha256"), "warn", positive,
                             str(tmp_path / "index.csv"), str(tmp_path / "verify.json"))

    with pytest.raises(DataError, match=r"datasets\.two\.positive_class: required .*\['Covid', 'Normal'\]"):
        verify("two", None)
    with pytest.raises(DataError, match=r"datasets\.two\.positive_class: 'Sick' is not one of"):
        verify("two", "Sick")
    assert verify("two", "Covid")["positive_class"] == "Covid"


def test_prepare_decodes_every_indexed_image_in_index_order(verified, report, tmp_path):
    stages.prepare(str(verified["data"]), str(verified["index"]), 32, str(tmp_path / "images.npy"),
                   str(tmp_path / "images.json"), COLOUR)
    images, paths = np.load(tmp_path / "images.npy"), index_of(verified)["path"]
    assert images.shape == (11, 32, 32, 3) and images.dtype == np.uint8
    for row, path in enumerate(paths):
        np.testing.assert_array_equal(images[row], load_image(verified["data"] / path, 32)[0])
    conversions = json.loads((tmp_path / "images.json").read_text())
    assert conversions["image_size"] == 32 and conversions["colour"]["policy"] == "warn"


def test_thumbnails_are_the_test_images_only(verified, report, tmp_path):
    stages.thumbnails(str(verified["data"]), str(verified["index"]), str(tmp_path / "thumbs.npz"), size=32)
    index = index_of(verified)
    tests = list(index.loc[index["split"] == "test", "path"])
    with np.load(tmp_path / "thumbs.npz") as saved:
        assert list(saved["paths"]) == tests and len(tests) == 4
        for image, path in zip(saved["images"], tests, strict=True):
            np.testing.assert_array_equal(image, load_image(verified["data"] / path, 32)[0])


@pytest.fixture(scope="module")
def reencoded(verified, report):
    """The dataset plus a re-encoded copy of a training image in test/ (resized to 200 px,
    JPEG quality 60): verified, and its leakage table written under ``policy`` warn."""
    work = verified["work"] / "reencoded"
    data = work / "data"
    shutil.copytree(verified["data"], data)
    source = sorted((data / "train" / "Normal").iterdir())[0]
    copy = cv2.resize(cv2.imread(str(source)), (200, 200), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(data / "test" / "Normal" / "copy.jpg"), copy, [cv2.IMWRITE_JPEG_QUALITY, 60])
    (work / "data.sha256").write_text(make_manifest(data))
    stages.verify("tiny", str(data), str(work / "data.sha256"), "warn", None, str(work / "index.csv"),
                  str(work / "verify.json"))
    stages.leakage(str(data), str(work / "index.csv"), "warn", str(work / "leakage.csv"),
                   str(work / "copies.csv"))
    return {"data": data, "index": work / "index.csv", "leakage": work / "leakage.csv", "copies": work / "copies.csv",
            "source": source.relative_to(data).as_posix()}


def test_leakage_finds_byte_identical_and_reencoded_test_copies_and_warns_by_name(reencoded, tmp_path, capsys):
    stages.leakage(str(reencoded["data"]), str(reencoded["index"]), "warn", str(tmp_path / "leakage.csv"),
                   str(tmp_path / "copies.csv"))
    out = capsys.readouterr().out
    assert f"WARNING leakage: test/Normal/copy.jpg ≈ {reencoded['source']}" in out
    assert f"WARNING leakage: {LEAKED[1]} ≈ {LEAKED[0]} (r = 1.00)" in out
    assert "2 of 5 test images are copies of training or validation images (1 byte-identical)" in out
    table = pd.read_csv(tmp_path / "leakage.csv", keep_default_na=False).set_index("path")
    assert (tmp_path / "leakage.csv").read_text() == reencoded["leakage"].read_text()
    assert len(table) == 5 and (table["most_similar_split"] == "train").all()
    copies = table[table["identical"] | table["near_duplicate"]]
    assert dict(copies["most_similar"]) == {LEAKED[1]: LEAKED[0], "test/Normal/copy.jpg": reencoded["source"]}
    assert copies.loc["test/Normal/copy.jpg", ["identical", "near_duplicate"]].tolist() == [False, True]


def test_leakage_fail_names_every_copy_and_writes_nothing(reencoded, tmp_path):
    with pytest.raises(DataError) as error:
        stages.leakage(str(reencoded["data"]), str(reencoded["index"]), "fail", str(tmp_path / "leakage.csv"),
                       str(tmp_path / "copies.csv"))
    message = str(error.value)
    assert re.search(rf"  - test/Normal/copy.jpg ≈ {reencoded['source']} \(r = (0.9\d|1.00), re-encoded\)", message)
    assert f"  - {LEAKED[1]} ≈ {LEAKED[0]} (r = 1.00, byte-identical)" in message
    assert not (tmp_path / "leakage.csv").exists()


@pytest.mark.parametrize("seed, twin", [(3, "train"), (1, "val")])
def test_split_drops_test_copies_whichever_side_their_twin_falls_on(reencoded, tmp_path, capsys, seed, twin):
    """test/Covid/COVID-00012.jpg is a byte copy of train/Covid/COVID-00012.jpg and
    test/Normal/copy.jpg a re-encoded copy of a training image: both dropped, whether the
    seed keeps the twin for training or holds it out for validation."""
    settings = {"val_fraction": 0.5, "leakage": "drop", "val_folder": "auto", "min_val_per_class": 20}
    stages.split(str(reencoded["index"]), str(reencoded["leakage"]), str(reencoded["copies"]),
                 seed, settings, str(tmp_path / "split.csv"))
    assert "no val/ folder" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "split.csv", keep_default_na=False).set_index("path")
    assert len(table) == 12
    assert table.loc[list(LEAKED), "subset"].tolist() == [twin, "dropped"]
    assert table.loc["test/Normal/copy.jpg", "subset"] == "dropped"
    assert (table.loc[table["split"] == "test", "subset"] == "test").sum() == 3
    train = table[table["split"] == "train"]
    # by class: max(1, round(0.5 n)) of n = 3, 2, 2 training images held out for validation
    assert train.groupby("label")["subset"].apply(lambda s: (s == "val").sum()).to_dict() == {
        "Covid": 2, "Normal": 1, "Viral Pneumonia": 1}
    assert (table.loc[table["subset"] == "train", "train_rank"] == 0).all()  # one training image per class


def test_split_keeps_test_copies_under_warn(reencoded, tmp_path):
    settings = {"val_fraction": 0.5, "leakage": "warn", "val_folder": "auto", "min_val_per_class": 20}
    stages.split(str(reencoded["index"]), str(reencoded["leakage"]), str(reencoded["copies"]),
                 2, settings, str(tmp_path / "split.csv"))
    table = pd.read_csv(tmp_path / "split.csv", keep_default_na=False)
    assert (table.loc[table["split"] == "test", "subset"] == "test").sum() == 5


def test_the_demos_copies_leave_every_seeds_test_set_alike(tmp_path, capsys):
    """The demo's 6 byte-identical and 3 re-encoded test copies, found by the leakage step
    and dropped by the split step: the same 57 test images for seeds 1 to 4, whichever
    side of each seed's hold-out a copy's training twin falls on."""
    stages.verify("demo", str(DEMO), "config/manifests/demo.sha256", "drop", None, str(tmp_path / "index.csv"),
                  str(tmp_path / "verify.json"))
    stages.leakage(str(DEMO), str(tmp_path / "index.csv"), "drop", str(tmp_path / "leakage.csv"),
                   str(tmp_path / "copies.csv"))
    assert "9 of 66 test images are copies of training or validation images (6 byte-identical)" in (
        capsys.readouterr().out)
    settings = {"val_fraction": 0.15, "leakage": "drop", "val_folder": "auto", "min_val_per_class": 20}
    dropped, twins_held_out = {}, set()
    for seed in (1, 2, 3, 4):
        out = tmp_path / f"seed{seed}.csv"
        stages.split(str(tmp_path / "index.csv"), str(tmp_path / "leakage.csv"), str(tmp_path / "copies.csv"),
                     seed, settings, str(out))
        split = pd.read_csv(out, keep_default_na=False).set_index("path")
        dropped[seed] = set(split.index[split["subset"] == "dropped"])
        twins_held_out |= {twin for twin in ("train/Covid/090.jpeg", "train/Covid/COVID-00022.jpg",
                                             "train/Covid/COVID-00037.jpg") if split.loc[twin, "subset"] == "val"}
        assert (split["subset"] == "test").sum() == 57
    assert dropped[4] == dropped[1] == dropped[2] == dropped[3]
    assert {"test/Covid/0112.jpg", "test/Covid/0100.jpeg", "test/Covid/COVID-00037.jpg",
            "test/Covid/auntminnie-2020_01_31_20_24_2322_2020_01_31_x-ray_coronavirus_US.jpg"} <= dropped[1]
    assert len(dropped[1]) == 9 and twins_held_out  # some seed holds out a twin for validation


# Near-copies (different bytes) of the demo: within its training pool, and within its test set.
DEMO_POOL_COPIES = [("train/Covid/COVID-00033.jpg", "train/Covid/COVID-00037.jpg"),
                    ("train/Covid/057.jpeg", "train/Covid/078.jpeg"), ("train/Covid/068.jpg", "train/Covid/076.jpg")]
DEMO_TEST_COPIES = [
    ("test/Covid/0106.jpeg", "test/Covid/auntminnie-c-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.jpeg"),
    ("test/Covid/0108.jpeg", "test/Covid/auntminnie-b-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.jpeg")]


def test_the_demos_near_copies_stay_on_one_side_of_every_split_and_are_resampled_as_one(tmp_path):
    """The leakage step lists the demo's near-copies within the training pool and within
    the test set; for seeds 1 to 8 the hold-out keeps each pool pair on one side (some seed
    holds one out whole), and the test bootstrap draws each test pair as one unit."""
    from scripts.stats.stats import resample_counts

    stages.verify("demo", str(DEMO), "config/manifests/demo.sha256", "warn", None, str(tmp_path / "index.csv"),
                  str(tmp_path / "verify.json"))
    stages.leakage(str(DEMO), str(tmp_path / "index.csv"), "warn", str(tmp_path / "leakage.csv"),
                   str(tmp_path / "copies.csv"))
    copies = pd.read_csv(tmp_path / "copies.csv", keep_default_na=False)
    listed = set(zip(copies["path"], copies["copy_of"], copies["within"], strict=True))
    assert {(a, b, "training pool") for a, b in DEMO_POOL_COPIES} <= listed
    assert {(a, b, "test set") for a, b in DEMO_TEST_COPIES} <= listed
    settings = {"val_fraction": 0.15, "leakage": "warn", "val_folder": "auto", "min_val_per_class": 20}
    held_out = set()
    for seed in range(1, 9):
        out = tmp_path / f"seed{seed}.csv"
        stages.split(str(tmp_path / "index.csv"), str(tmp_path / "leakage.csv"), str(tmp_path / "copies.csv"),
                     seed, settings, str(out))
        split = pd.read_csv(out, keep_default_na=False)
        subset = split.set_index("path")["subset"]
        for pair in DEMO_POOL_COPIES:
            assert subset[pair[0]] == subset[pair[1]], (seed, pair)
            held_out |= {pair} if subset[pair[0]] == "val" else set()
    assert held_out  # the pairs are held out whole, not never
    tests = list(split.loc[split["subset"] == "test", "path"])
    units = read_test_groups(str(out), tests)
    position = {path: i for i, path in enumerate(tests)}
    counts = resample_counts(split.set_index("path").loc[tests, "label"], 200, 0, units)
    for a, b in DEMO_TEST_COPIES:
        assert units[position[a]] == units[position[b]]
        np.testing.assert_array_equal(counts[:, position[a]], counts[:, position[b]])
    assert len(set(units)) < len(tests)


@pytest.fixture(scope="module")
def kermany(tmp_path_factory):
    """A Kermany-style folder of real images with repeated patients (conftest), verified
    with the example configs' patient pattern, and its leakage table."""
    work = tmp_path_factory.mktemp("kermany")
    data = kermany_patients(work / "data")
    report = stages.verify("kermany", str(data), f"{data}.sha256", "drop", "PNEUMONIA", str(work / "index.csv"),
                           str(work / "verify.json"), KERMANY_GROUPS)
    return {"data": data, "index": work / "index.csv", "report": report, "work": work}


def test_verify_writes_the_patient_of_every_image(kermany):
    index = pd.read_csv(kermany["index"], keep_default_na=False).set_index("path")
    assert list(index.columns) == ["split", "label", "sha256", "group"]
    assert index.loc["train/NORMAL/IM-0437-0001-0002.jpeg", "group"] == "IM-0437"
    assert index.loc["test/NORMAL/NORMAL2-IM-0381-0001.jpeg", "group"] == "NORMAL2-IM-0381"
    assert (index.loc[index.index.str.contains(SHARED_PATIENT), "group"] == SHARED_PATIENT).sum() == 4
    # train: 47 PNEUMONIA patients (person83 keeps 3 images) + 40 NORMAL + IM-0437; test: 10 + person83 + 20
    assert kermany["report"]["groups"] == {**KERMANY_GROUPS, "per_split": {"test": 31, "train": 88}}
    written = json.loads((kermany["work"] / "verify.json").read_text())
    assert written["groups"] == kermany["report"]["groups"]


def test_verify_names_an_image_the_pattern_gives_no_patient_and_writes_nothing(kermany, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(kermany["data"], data)
    shutil.copy(sorted((data / "test" / "NORMAL").iterdir())[0], data / "test" / "NORMAL" / "scan_0001.jpeg")
    (tmp_path / "data.sha256").write_text(make_manifest(data))
    with pytest.raises(DataError, match=r"datasets.kermany.groups: 1 image\(s\) get no group from pattern .*\n"
                                        r"  - test/NORMAL/scan_0001.jpeg$"):
        stages.verify("kermany", str(data), str(tmp_path / "data.sha256"), "drop", "PNEUMONIA",
                      str(tmp_path / "index.csv"), str(tmp_path / "verify.json"), KERMANY_GROUPS)
    assert not (tmp_path / "index.csv").exists() and not (tmp_path / "verify.json").exists()


def test_a_patient_with_training_and_test_images_is_dropped_kept_or_named_as_the_policy_says(kermany, tmp_path,
                                                                                             capsys):
    """No test image is a copy, but person83 has 3 training images and 1 test image:
    ``drop`` leaves that test image out of every seed's test set, ``warn`` keeps it,
    ``fail`` names the patient and writes nothing."""
    shared = f"test/PNEUMONIA/{SHARED_PATIENT}_bacteria_414.jpeg"
    with pytest.raises(DataError, match=rf"patients of .* with test images and training or validation images "
                                        rf"\(their test images\) \(1\):\n  - {SHARED_PATIENT}: {shared}"):
        stages.leakage(str(kermany["data"]), str(kermany["index"]), "fail", str(tmp_path / "failed.csv"),
                       str(tmp_path / "copies.csv"))
    assert not (tmp_path / "failed.csv").exists()
    stages.leakage(str(kermany["data"]), str(kermany["index"]), "drop", str(tmp_path / "leakage.csv"),
                   str(tmp_path / "copies.csv"))
    out = capsys.readouterr().out
    assert f"WARNING patient in training and test: group {SHARED_PATIENT} (1 test image(s): {shared})" in out
    assert "0 of 31 test images are copies" in out
    assert "1 of 31 test groups (patients) also have training or validation images" in out
    table = pd.read_csv(tmp_path / "leakage.csv", keep_default_na=False)
    assert list(table.loc[table["group_in_training"], "path"]) == [shared]
    for policy, subset in (("drop", "dropped"), ("warn", "test")):
        settings = {"val_fraction": 0.3, "leakage": policy, "val_folder": "auto", "min_val_per_class": 20}
        for seed in (1, 2):
            stages.split(str(kermany["index"]), str(tmp_path / "leakage.csv"), str(tmp_path / "copies.csv"),
                         seed, settings,
                         str(tmp_path / "split.csv"))
            split = pd.read_csv(tmp_path / "split.csv", keep_default_na=False).set_index("path")
            assert split.loc[shared, "subset"] == subset
            assert (split.drop(index=shared)["subset"] != "dropped").all()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_split_holds_out_whole_patients_and_writes_each_images_patient(kermany, tmp_path, seed):
    (tmp_path / "leakage.csv").write_text("path,near_duplicate\n")
    (tmp_path / "copies.csv").write_text("path,copy_of,correlation,within\n")
    settings = {"val_fraction": 0.15, "leakage": "drop", "val_folder": "auto", "min_val_per_class": 20}
    stages.split(str(kermany["index"]), str(tmp_path / "leakage.csv"), str(tmp_path / "copies.csv"),
                 seed, settings, str(tmp_path / "split.csv"))
    split = pd.read_csv(tmp_path / "split.csv", keep_default_na=False)
    index = pd.read_csv(kermany["index"], keep_default_na=False)
    assert split["group"].tolist() == index["group"].tolist()
    pool = split[split["split"] == "train"]
    assert (pool.groupby("group")["subset"].nunique() == 1).all()
    held = pool.groupby("label")["subset"].apply(lambda s: (s == "val").mean())
    assert held.between(0.08, 0.25).all(), held  # 3/20 of the patients of each class


def test_external_overlap_finds_a_reencoded_copy_of_a_trained_image(verified, report, tmp_path):
    """External test images: a training image resized to 200 px and saved as JPEG
    quality 60, and a demo test image that is not in the trained copy; its training
    image is not compared."""
    source = verified["data"] / "train" / "Normal" / "010.jpeg"
    (tmp_path / "ext" / "test" / "N").mkdir(parents=True)
    (tmp_path / "ext" / "train" / "N").mkdir(parents=True)
    copy = cv2.resize(cv2.imread(str(source)), (200, 200), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(tmp_path / "ext" / "test" / "N" / "copy.jpg"), copy, [cv2.IMWRITE_JPEG_QUALITY, 60])
    shutil.copy(DEMO / "test" / "Normal" / "0106.jpeg", tmp_path / "ext" / "test" / "N" / "other.jpeg")
    shutil.copy(source, tmp_path / "ext" / "train" / "N" / "same.jpeg")
    pd.DataFrame({"path": ["train/N/same.jpeg", "test/N/copy.jpg", "test/N/other.jpeg"],
                  "split": ["train", "test", "test"], "label": "N"}).to_csv(tmp_path / "ext.csv", index=False)
    stages.external_overlap(str(verified["data"]), str(verified["index"]), str(tmp_path / "ext"),
                            str(tmp_path / "ext.csv"), str(tmp_path / "overlap.csv"))
    table = pd.read_csv(tmp_path / "overlap.csv", keep_default_na=False)
    assert list(table.columns) == ["path", "label", "most_similar", "most_similar_split", "correlation",
                                   "near_duplicate"]
    assert list(table["path"]) == ["test/N/copy.jpg", "test/N/other.jpeg"]
    copy_row, other_row = table.to_dict("records")
    assert (copy_row["most_similar"], copy_row["most_similar_split"]) == ("train/Normal/010.jpeg", "train")
    assert copy_row["near_duplicate"] and copy_row["correlation"] > 0.9
    assert not other_row["near_duplicate"] and other_row["correlation"] < 0.6


@pytest.mark.parametrize("step", ["aggregate", "report"])
def test_a_step_given_the_wrong_table_names_names_the_expected_ones(step, tmp_path):
    tables = {"runs": str(tmp_path / "runs.csv"), "summary": str(tmp_path / "summary.csv")}
    call = {"aggregate": lambda: stages.aggregate(str(tmp_path / "plan.json"), tables),
            "report": lambda: stages.report(str(tmp_path / "plan.json"), tables, str(tmp_path / "r.html"))}[step]
    with pytest.raises(ValueError, match=r"tables: expected the names \['comparisons', 'decision_curve', "
                                         r"'ensembles', 'external', .*got \['runs', 'summary'\]"):
        call()


# ---- Whether a packed run finished from what it would be trained from now ---------------

def finished_member(tmp_path, settings: dict) -> tuple:
    """A run, its images, its pack member and its settings, with a finished record written
    as a pack job writes it."""
    images, split = tmp_path / "images.npy", tmp_path / "seed1.csv"
    images.write_bytes(b"decoded")
    split.write_text("path,split\na.png,train\n")
    run = stages.RunIdentity("tiny", "scratch_cnn", "scratch", "none", 1.0, 1)
    outputs = {name: str(tmp_path / "run" / name) for name in ("info",)}
    (tmp_path / "run").mkdir()
    member = stages.PackMember(seed=1, split=str(split), checkpoint="", log="", outputs=outputs)
    stages._write_finished(run, str(images), str(split), settings, [], outputs, started=0.0)
    return run, str(images), member


def test_a_run_finished_from_the_same_settings_split_and_images_is_kept(tmp_path):
    settings = {"training": {"epochs": 20}}
    run, images, member = finished_member(tmp_path, settings)
    assert stages._finished_entry(run, images, member, settings, [])["seed"] == 1
    assert stages._finished_entry(run, images, member, {"training": {"epochs": 1}}, []) is None
    Path(member.split).write_text("path,split\na.png,val\n")  # the split was drawn again
    assert stages._finished_entry(run, images, member, settings, []) is None


def test_each_attempt_appends_to_a_seeds_log_after_a_numbered_header(tmp_path):
    log = tmp_path / "train.log"
    for said in ("first attempt failed", "second attempt trained"):
        with stages.open_attempt_log(str(log)) as handle:
            print(said, file=handle)
    lines = log.read_text().splitlines()
    assert [line.split()[:3] for line in lines[::2]] == [["==", "attempt", "1"], ["==", "attempt", "2"]]
    assert lines[1::2] == ["first attempt failed", "second attempt trained"]


def test_only_out_of_memory_and_io_errors_are_worth_a_retry():
    class ResourceExhaustedError(RuntimeError):  # TensorFlow's GPU out-of-memory, by its name
        pass

    assert [stages.retryable(e) for e in (MemoryError(), ResourceExhaustedError("OOM"), FileNotFoundError("x"))] \
        == [True, True, True]
    assert [stages.retryable(e) for e in (ValueError("not a split"), KeyError("label"), RuntimeError("cuDNN"))] \
        == [False, False, False]


def test_a_retry_reads_the_failure_record_of_the_attempt_before_it(tmp_path):
    record = tmp_path / "failure.json"
    record.write_text(json.dumps({"attempt": 1, "error": "seed 2: KeyError: 'label'"}))
    assert stages._not_retried(str(record), 2) == "seed 2: KeyError: 'label'"
    assert json.loads(record.read_text())["attempt"] == 2  # attempt 3 stops too
    assert stages._not_retried(str(record), 3) == "seed 2: KeyError: 'label'"
    assert stages._not_retried(str(record), 1) is None and not record.exists()  # a new snakemake trains again
    record.write_text(json.dumps({"attempt": 1, "error": "old"}))
    assert stages._not_retried(str(record), 3) is None  # a record of another chain of attempts
