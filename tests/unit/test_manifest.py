"""Dataset verification on real X-rays: hashes, layout, duplicates and leakage."""

from __future__ import annotations

import json

import pytest
from conftest import DEMO, copy_dataset

from scripts import stages
from scripts.manifest import DataError, check_classes, find_duplicates, make_manifest, verify_dataset


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
