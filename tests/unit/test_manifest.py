"""Dataset verification on real X-rays: hashes, layout, duplicates and leakage (test
images that are byte-identical or re-encoded copies of training images)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import DEMO, KERMANY, copy_dataset

from scripts import stages
from scripts.data import external
from scripts.data.images import load_image
from scripts.data.manifest import (
    DataError,
    check_classes,
    copies_of,
    find_duplicates,
    groups_in_training,
    leakage_error,
    leakage_table,
    make_manifest,
    most_similar,
    verify_dataset,
)


@pytest.fixture
def dataset(tmp_path):
    return copy_dataset(tmp_path / "data", {"train": 4, "test": 2})


def verify(data, tmp_path, leakage="warn"):
    return stages.verify("t", str(data), f"{data}.sha256", leakage, None, str(tmp_path / "index.csv"),
                         str(tmp_path / "verify.json"))


def test_demo_data_counts_duplicates_and_leakage(tmp_path):
    report = stages.verify("demo", str(DEMO), "config/manifests/demo.sha256", "warn", None,
                           str(tmp_path / "index.csv"), str(tmp_path / "verify.json"))
    assert report["counts"] == {"test": {"Covid": 26, "Normal": 20, "Viral Pneumonia": 20},
                                "train": {"Covid": 111, "Normal": 70, "Viral Pneumonia": 70}}
    cross = [g["paths"] for g in report["duplicates"] if g["cross_split"]]
    within = [g["paths"] for g in report["duplicates"] if not g["cross_split"]]
    assert len(cross) == 6 and len(within) == 4
    assert ["test/Covid/radiopaedia-2019-novel-coronavirus-infected-pneumonia.jpg",
            "train/Covid/069.jpg"] in cross
    assert ["train/Normal/019.jpeg", "train/Normal/020.jpeg"] in within
    assert json.loads((tmp_path / "verify.json").read_text())["verified"] == "passed"


def test_manifest_round_trip_with_spaces_in_names(dataset):
    text = (dataset.parent / "data.sha256").read_text()
    assert "train/Viral Pneumonia/" in text
    assert text == make_manifest(dataset)
    assert len(verify_dataset(dataset, f"{dataset}.sha256")) == len(text.splitlines())


def test_changed_file_is_named(dataset, tmp_path):
    victim = sorted((dataset / "train" / "Normal").iterdir())[0]
    victim.write_bytes(victim.read_bytes() + b"\0")
    with pytest.raises(DataError, match=f"(?s)content changed.*train/Normal/{victim.name}"):
        verify(dataset, tmp_path)


def test_missing_and_unlisted_files_are_named(dataset, tmp_path):
    gone = sorted((dataset / "test" / "Covid").iterdir())[0]
    gone.rename(dataset / "train" / "Covid" / "new.jpeg")
    with pytest.raises(DataError) as error:
        verify(dataset, tmp_path)
    message = str(error.value)
    assert f"missing on disk (1):\n  - test/Covid/{gone.name}" in message
    assert "not in the manifest (1):\n  - train/Covid/new.jpeg" in message
    assert "python -m scripts manifest" in message
    assert not (tmp_path / "index.csv").exists()


@pytest.mark.parametrize("line, expected", [
    ("deadbeef  train/Covid/x.jpeg", "line 1: not '<64 hex sha256>  <path>'"),
    (f"{'a' * 64}  ../x.jpeg", "line 1: path '../x.jpeg' points outside the dataset root"),
    (f"{'a' * 64}  /etc/passwd", "points outside the dataset root"),
])
def test_malformed_manifest_lines(dataset, tmp_path, line, expected):
    manifest = dataset.parent / "data.sha256"
    manifest.write_text(line + "\n" + manifest.read_text())
    with pytest.raises(DataError, match="malformed manifest") as error:
        verify(dataset, tmp_path)
    assert expected in str(error.value)


def test_unsupported_format_is_named(dataset, tmp_path):
    (dataset / "train" / "Covid" / "scan.dcm").write_bytes(b"DICM")
    with pytest.raises(DataError, match=r"(?s)train/Covid/scan.dcm: unsupported format '.dcm'.*DICOM"):
        verify(dataset, tmp_path)


def test_hidden_files_are_ignored(dataset, tmp_path):
    (dataset / "train" / ".DS_Store").write_bytes(b"junk")
    assert verify(dataset, tmp_path)["n_images"] > 0


def test_leakage_fail_policy_names_the_copies(dataset, tmp_path):
    with pytest.raises(DataError, match=r"test/Covid/COVID-00012.jpg = train/Covid/COVID-00012.jpg"):
        verify(dataset, tmp_path, leakage="fail")


@pytest.mark.parametrize("change, expected", [
    (lambda d: [p.unlink() for p in (d / "train").glob("[NV]*/*")], "train/ has only the class"),
    (lambda d: (d / "test" / "Extra").mkdir() or
     (d / "test" / "Extra" / "a.png").write_bytes((d / "test" / "Normal").glob("*").__next__().read_bytes()),
     r"test/ has classes not in train/: \['Extra'\]"),
])
def test_class_layout_errors(dataset, tmp_path, change, expected):
    change(dataset)
    (dataset.parent / "data.sha256").write_text(make_manifest(dataset))
    with pytest.raises(DataError, match=expected):
        verify(dataset, tmp_path)


def test_no_test_split(dataset, tmp_path):
    import shutil

    shutil.rmtree(dataset / "test")
    (dataset.parent / "data.sha256").write_text(make_manifest(dataset))
    with pytest.raises(DataError, match="no test/ split"):
        verify(dataset, tmp_path)


def test_empty_class_folder_is_not_a_class(dataset):
    (dataset / "train" / "Empty").mkdir()
    records = verify_dataset(dataset, f"{dataset}.sha256")
    assert "Empty" not in check_classes(records)


def test_duplicates_inside_one_split():
    records = verify_dataset(DEMO, "config/manifests/demo.sha256")
    groups = find_duplicates(records)
    assert {"train/Viral Pneumonia/019.jpeg", "train/Viral Pneumonia/020.jpeg"} == set(
        next(g["paths"] for g in groups if "train/Viral Pneumonia/019.jpeg" in g["paths"]))



def test_the_manifest_command_writes_what_verify_checks(dataset, tmp_path):
    import subprocess
    import sys

    from conftest import PROJECT

    out = tmp_path / "written.sha256"
    done = subprocess.run([sys.executable, "-m", "scripts", "manifest", str(dataset), "-o", str(out)],
                          cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == (dataset.parent / "data.sha256").read_text()
    assert len(verify_dataset(dataset, out)) == len(out.read_text().splitlines())


# Different radiographs of the Kermany subset (it holds no copies), as fingerprints.
DISTINCT = sorted((KERMANY / "train" / "NORMAL").iterdir())[:6]


def thumbnails(*images: np.ndarray) -> np.ndarray:
    return external.fingerprints(list(images))


def radiograph(i: int) -> np.ndarray:
    return load_image(DISTINCT[i], 256)[0]


def rotated(image: np.ndarray, degrees: float) -> np.ndarray:
    import cv2

    centre = (image.shape[1] / 2, image.shape[0] / 2)
    return cv2.warpAffine(image, cv2.getRotationMatrix2D(centre, degrees, 1.0), image.shape[1::-1])


def test_most_similar_names_the_most_similar_reference_and_flags_near_duplicates():
    """q0 is reference r1 rotated by 4°, q1 a radiograph of none of the references."""
    queries = pd.DataFrame({"path": ["q0", "q1"], "label": ["A", "B"]})
    references = pd.DataFrame({"path": ["r0", "r1", "r2"], "split": ["train", "val", "train"]})
    table = most_similar(queries, thumbnails(rotated(radiograph(1), 4), radiograph(5)), references,
                         thumbnails(*(radiograph(i) for i in range(3))))
    assert list(table.columns) == ["path", "label", "most_similar", "most_similar_split", "correlation",
                                   "near_duplicate"]
    assert table.loc[0, ["path", "label", "most_similar", "most_similar_split"]].tolist() == ["q0", "A", "r1", "val"]
    assert table["correlation"][0] >= external.NEAR_DUPLICATE_CORRELATION > table["correlation"][1]
    assert table["near_duplicate"].tolist() == [True, False]


def test_leakage_table_compares_test_images_with_train_and_val_only():
    """t0 is byte-identical to a val image (its pixels unlike any), t1 a radiograph of no
    training image, t2 a rotated copy of train image b, and t3 the same image as t1,
    another test image, which does not count."""
    index = pd.DataFrame({"path": ["a", "b", "v", "t0", "t1", "t2", "t3"],
                          "split": ["train", "train", "val", "test", "test", "test", "test"],
                          "label": "X", "sha256": ["1", "2", "3", "3", "4", "5", "4"]})
    prints = thumbnails(radiograph(0), radiograph(1), radiograph(2), radiograph(3), radiograph(4),
                        rotated(radiograph(1), -3), radiograph(4))
    table = leakage_table(index, prints)
    assert list(table.columns) == ["path", "label", "most_similar", "most_similar_split", "correlation",
                                   "identical", "near_duplicate", "group", "group_in_training"]
    assert list(table["path"]) == ["t0", "t1", "t2", "t3"]
    assert table["group"].tolist() == [""] * 4 and not table["group_in_training"].any()  # no groups declared
    assert table["identical"].tolist() == [True, False, False, False]
    assert table["near_duplicate"].tolist() == [False, False, True, False]
    assert list(copies_of(table)["path"]) == ["t0", "t2"]
    assert table.loc[2, "most_similar"] == "b" and table.loc[2, "most_similar_split"] == "train"


def test_leakage_table_reports_the_patients_with_training_and_test_images():
    """Patient P1 has a train and two test images, P2 a val and a test image, P3 only
    test images; no image is a copy of another."""
    index = pd.DataFrame({"path": ["a", "v", "t0", "t1", "t2", "t3"],
                          "split": ["train", "val", "test", "test", "test", "test"], "label": "X",
                          "sha256": list("123456"), "group": ["P1", "P2", "P1", "P3", "P1", "P2"]})
    table = leakage_table(index, thumbnails(*(radiograph(i) for i in range(6))))
    assert table["group"].tolist() == ["P1", "P3", "P1", "P2"]
    assert table["group_in_training"].tolist() == [True, False, True, True]
    assert copies_of(table).empty
    shared = groups_in_training(table)
    assert shared.to_dict("list") == {"group": ["P1", "P2"], "n_test": [2, 1], "paths": ["t0 t2", "t3"]}
    assert groups_in_training(table[~table["group_in_training"]]).empty


def test_leakage_error_names_every_copy_its_partner_and_the_kind_and_every_shared_patient():
    copies = pd.DataFrame({"path": ["test/A/1.png", "test/A/2.png"], "most_similar": ["train/A/1.png", "val/A/9.png"],
                           "correlation": [1.0, 0.8612], "identical": [True, False]})
    shared = pd.DataFrame({"group": ["P1"], "n_test": [2], "paths": ["test/A/3.png test/A/4.png"]})
    message = str(leakage_error("data", copies, shared))
    assert "test images of data that are copies of training or validation images (leakage) (2):" in message
    assert "  - test/A/1.png ≈ train/A/1.png (r = 1.00, byte-identical)" in message
    assert "  - test/A/2.png ≈ val/A/9.png (r = 0.86, re-encoded)" in message
    assert "patients of data with test images and training or validation images (their test images) (1):\n" \
           "  - P1: test/A/3.png test/A/4.png" in message
    assert "data.leakage: drop" in message
    assert "patients" not in str(leakage_error("data", copies, shared.iloc[:0]))


# The demo's test images that are copies of training images, with their partners.
DEMO_IDENTICAL = {f"test/Covid/{name}": f"train/Covid/{name}"
                  for name in ("COVID-00003b.jpg", "COVID-00012.jpg", "COVID-00022.jpg", "COVID-00033.jpg",
                               "COVID-00037.jpg")} | {
    "test/Covid/radiopaedia-2019-novel-coronavirus-infected-pneumonia.jpg": "train/Covid/069.jpg"}
DEMO_REENCODED = {
    "test/Covid/0112.jpg": "train/Covid/090.jpeg",
    "test/Covid/auntminnie-2020_01_31_20_24_2322_2020_01_31_x-ray_coronavirus_US.jpg": "train/Covid/090.jpeg",
    "test/Covid/0100.jpeg": "train/Covid/COVID-00022.jpg"}


def test_the_demos_byte_identical_and_reencoded_test_copies_are_found_with_their_training_partners():
    index = pd.DataFrame([vars(r) for r in verify_dataset(DEMO, "config/manifests/demo.sha256")])
    prints = external.fingerprints([load_image(DEMO / path, external.FINGERPRINT_SIZE)[0] for path in index["path"]])
    table = leakage_table(index, prints)
    assert len(table) == 66
    copies = copies_of(table).set_index("path")
    assert dict(copies["most_similar"]) == DEMO_IDENTICAL | DEMO_REENCODED
    assert set(copies.index[copies["identical"]]) == set(DEMO_IDENTICAL)
    assert copies["near_duplicate"].all()  # the byte-identical ones correlate too
    assert (copies.loc[list(DEMO_REENCODED), "correlation"] < 0.99).all()
    clean = table[~table["path"].isin(copies.index)]
    assert clean["correlation"].max() < external.DIFFERENT_RADIOGRAPHS_BELOW
