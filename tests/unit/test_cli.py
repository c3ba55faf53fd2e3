"""The command line the rules run: arguments reach the steps, the user's errors are one
``ERROR:`` line and status 1, a wrong command line is argparse's status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import PROJECT, copy_dataset

from scripts.__main__ import main
from scripts.data.manifest import make_manifest


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return copy_dataset(tmp_path_factory.mktemp("cli") / "data", {"train": 1, "test": 1}, extra=())


def verify_args(data, out, manifest=None, *extra: str) -> list[str]:
    return ["verify", "--dataset", "d", "--root", str(data), "--manifest", str(manifest or f"{data}.sha256"),
            "--leakage", "warn", "--index", str(out / "index.csv"), "--report", str(out / "verify.json"), *extra]


def test_a_missing_manifest_exits_1_with_one_error_line_naming_it(dataset, tmp_path):
    """Through ``python -m scripts``, so the process's exit status is checked too."""
    missing = tmp_path / "nowhere.sha256"
    done = subprocess.run([sys.executable, "-m", "scripts", *verify_args(dataset, tmp_path, missing)],
                          cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ERROR: manifest {missing} not found")
    assert not (tmp_path / "index.csv").exists()


@pytest.mark.parametrize("argv, named", [
    (["verify", "--dataset", "d", "--root", "r", "--manifest", "m", "--leakage", "warn", "--report", "x"],
     "--index"),
    (["split", "--index", "i", "--settings", "{}", "--output", "o"], "--seed"),
    (["report", "--plan", "p", "--output", "o", "--tables", "{not json"], "--tables"),
    (["split", "--index", "i", "--settings", "{}", "--output", "o", "--seed", "one"], "--seed"),
    ([], "command"),
    (["train-everything"], "train-everything"),
])
def test_a_wrong_command_line_exits_2_naming_the_argument(argv, named, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err


def test_verify_reaches_the_step_with_its_arguments(dataset, tmp_path, capsys):
    assert main(verify_args(dataset, tmp_path)) == 0
    report = json.loads((tmp_path / "verify.json").read_text())
    assert (report["dataset"], report["positive_class"], report["leakage_policy"]) == ("d", None, "warn")
    assert (tmp_path / "index.csv").read_text().count("\n") == 7  # header + 6 images
    assert main(verify_args(dataset, tmp_path, None, "--positive-class", "Sick")) == 1
    error = capsys.readouterr().err
    assert error.startswith("ERROR: datasets.d.positive_class: 'Sick' is not one of ['Covid', 'Normal',")
    assert error.count("\n") == 1


def test_manifest_without_output_goes_to_standard_output(dataset, capsys):
    assert main(["manifest", str(dataset)]) == 0
    assert capsys.readouterr().out == make_manifest(dataset)


def test_leakage_and_split_read_the_leakage_table_and_the_settings_json(dataset, tmp_path):
    assert main(verify_args(dataset, tmp_path)) == 0
    assert main(["leakage", "--root", str(dataset), "--index", str(tmp_path / "index.csv"), "--policy", "warn",
                 "--output", str(tmp_path / "leakage.csv"), "--copies", str(tmp_path / "copies.csv")]) == 0
    assert (tmp_path / "leakage.csv").read_text().splitlines()[0] == (
        "path,label,most_similar,most_similar_split,correlation,identical,near_duplicate,group,group_in_training")
    assert (tmp_path / "copies.csv").read_text().splitlines()[0] == "path,copy_of,correlation,within"
    settings = {"val_fraction": 0.5, "leakage": "warn", "val_folder": "auto", "min_val_per_class": 20}
    assert main(["split", "--index", str(tmp_path / "index.csv"), "--leakage-table", str(tmp_path / "leakage.csv"),
                 "--copies", str(tmp_path / "copies.csv"), "--seed", "1", "--settings", json.dumps(settings),
                 "--output", str(tmp_path / "split.csv")]) == 0
    lines = (tmp_path / "split.csv").read_text().splitlines()
    assert lines[0] == "path,label,sha256,split,subset,train_rank,val_source,group,unit" and len(lines) == 7


def test_verify_reads_the_groups_json(dataset, tmp_path, capsys):
    assert main(verify_args(dataset, tmp_path, None, "--groups", json.dumps({"pattern": "^x"}))) == 1
    error = capsys.readouterr().err
    assert error.startswith("ERROR: datasets.d.groups: 6 image(s) get no group from pattern '^x':\n  - train/")
    assert main(verify_args(dataset, tmp_path, None, "--groups", json.dumps({"pattern": r"^(.)"}))) == 0
    assert json.loads((tmp_path / "verify.json").read_text())["groups"]["pattern"] == "^(.)"


def test_a_weights_file_that_fails_its_hash_is_an_error_line_and_nothing_is_cached(tmp_path, capsys):
    source = tmp_path / "mirror" / "vgg16_notop.h5"
    source.parent.mkdir()
    source.write_bytes(b"not the published weights")
    cache = tmp_path / "cache" / "vgg16_notop.h5"
    assert main(["fetch-weights", "--url", source.as_uri(), "--md5", "0" * 32, "--output", str(cache)]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"ERROR: download of {source.as_uri()} rejected, nothing cached") and "MD5" in error
    assert not cache.exists()


def test_a_programming_error_is_not_dressed_as_a_user_error(tmp_path):
    """Only data, config and weights errors become an ``ERROR:`` line; anything else keeps
    its traceback."""
    with pytest.raises(ValueError, match="tables: expected the names"):
        main(["aggregate", "--plan", str(tmp_path / "plan.json"), "--tables", '{"runs": "runs.csv"}'])
