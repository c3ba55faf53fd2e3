"""The optional Kaggle download rule, against a local archive: a `kaggle` command on
PATH that serves a zip made here (the real CLI needs Kaggle credentials and internet)."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import copy_dataset, snakemake, write_config

from scripts.data.download import kaggle_dataset
from scripts.data.manifest import DataError

FAKE_KAGGLE = """#!/bin/sh
# kaggle datasets download -d SLUG -p DIR --unzip, served from $FAKE_KAGGLE_ZIP
echo "$@" >> "$FAKE_KAGGLE_CALLS"
[ -n "$FAKE_KAGGLE_FAIL" ] && { echo "401 - Unauthorized" >&2; exit 1; }
while [ $# -gt 0 ]; do [ "$1" = "-p" ] && dir="$2"; shift; done
exec python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
  "$FAKE_KAGGLE_ZIP" "$dir"
"""


@pytest.fixture
def kaggle(tmp_path, monkeypatch):
    """An archive laid out like Kaggle's (data under chest_xray/) and the CLI serving it."""
    source = copy_dataset(tmp_path / "source" / "chest_xray", {"train": 3, "test": 2})
    archive = tmp_path / "archive.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for file in source.rglob("*"):
            zipped.write(file, file.relative_to(source.parent))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kaggle").write_text(FAKE_KAGGLE)
    (bin_dir / "kaggle").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_KAGGLE_ZIP", str(archive))
    monkeypatch.setenv("FAKE_KAGGLE_CALLS", str(tmp_path / "calls.txt"))
    return {"manifest": source.parent / "chest_xray.sha256", "calls": tmp_path / "calls.txt"}


def test_workflow_downloads_then_verifies_against_the_manifest(kaggle, tmp_path):
    root = tmp_path / "data" / "kermany"
    config = write_config(tmp_path / "c.yaml", root)
    settings = yaml.safe_load(config.read_text())
    settings["datasets"]["tiny"] = {
        "path": str(root), "manifest": str(kaggle["manifest"]),
        "kaggle": {"dataset": "paultimothymooney/chest-xray-pneumonia", "subfolder": "chest_xray"}}
    config.write_text(yaml.safe_dump(settings))
    snakemake(tmp_path, "--configfile", str(config), "--cores", "1", "--until", "verify")
    assert json.loads((tmp_path / "results/tiny/data/verify.json").read_text())["verified"] == "passed"
    assert (root / "train").is_dir() and not list(root.parent.glob(".download-*"))
    assert kaggle["calls"].read_text().split()[:4] == ["datasets", "download", "-d",
                                                       "paultimothymooney/chest-xray-pneumonia"]
    snakemake(tmp_path, "--configfile", str(config), "--cores", "1", "--until", "verify")
    assert len(kaggle["calls"].read_text().splitlines()) == 1  # downloaded once


def test_without_a_shipped_manifest_the_download_writes_one(kaggle, tmp_path):
    root, manifest = tmp_path / "data" / "kermany", tmp_path / "kermany.sha256"
    config = write_config(tmp_path / "c.yaml", root)
    settings = yaml.safe_load(config.read_text())
    settings["datasets"]["tiny"] = {"path": str(root), "manifest": str(manifest),
                                    "kaggle": {"dataset": "o/n", "subfolder": "chest_xray"}}
    config.write_text(yaml.safe_dump(settings))
    result = snakemake(tmp_path, "--configfile", str(config), "--cores", "1", "--until", "verify")
    assert manifest.read_text() == kaggle["manifest"].read_text()
    marker = json.loads((tmp_path / "resources/downloads/tiny.json").read_text())
    assert marker["manifest_created"] is True
    assert "trust on first use" in (tmp_path / "logs/tiny/download.log").read_text()
    assert "passed" in (tmp_path / "results/tiny/data/verify.json").read_text(), result.stderr


def test_failed_download_places_nothing(kaggle, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_KAGGLE_FAIL", "1")
    root = tmp_path / "data" / "kermany"
    expected = r"(?s)kaggle could not download o/n \(exit 1\); nothing was placed.*401 - Unauthorized"
    with pytest.raises(DataError, match=expected):
        kaggle_dataset("o/n", "chest_xray", root, tmp_path / "m.sha256", tmp_path / "marker.json")
    assert not root.exists() and not list(root.parent.iterdir())


def test_wrong_subfolder_names_the_folders_found(kaggle, tmp_path):
    with pytest.raises(DataError, match=r"no train/ folder .* one of: \['chest_xray/train'\]"):
        kaggle_dataset("o/n", "", tmp_path / "data" / "k", tmp_path / "m.sha256", tmp_path / "marker.json")


def test_without_the_kaggle_command_the_error_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(Path(shutil.which("python3")).parent.parent / "nonexistent"))
    with pytest.raises(DataError, match="(?s)kaggle command is not installed.*pip install kaggle"):
        kaggle_dataset("o/n", "", tmp_path / "data" / "k", tmp_path / "m.sha256", tmp_path / "marker.json")


def test_existing_data_is_never_overwritten(tmp_path):
    root = copy_dataset(tmp_path / "mine", {"train": 1, "test": 1})
    before = sorted(p.name for p in root.rglob("*"))
    kaggle_dataset("o/n", "", root, f"{root}.sha256", tmp_path / "marker.json")
    assert sorted(p.name for p in root.rglob("*")) == before
    assert json.loads((tmp_path / "marker.json").read_text()) == {
        "kaggle": "o/n", "root": str(root), "downloaded": False, "manifest": f"{root}.sha256",
        "manifest_created": False}
