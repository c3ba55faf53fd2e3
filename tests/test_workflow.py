"""The workflow as users run it: dry-runs, config errors, and a tiny real study."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from conftest import PROJECT, XSS_CLASS, copy_dataset, snakemake, write_config


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_default_dry_run_lists_one_train_job_per_valid_combination():
    result = snakemake(PROJECT, "-n", "--forceall")
    counts = job_counts(result.stdout)
    # (scratch_cnn × scratch + 3 backbones × 4 strategies) × 2 seeds
    assert counts["train"] == 26
    assert counts["verify"] == 1 and counts["split"] == 2 and counts["report"] == 1
    for strategy in ("frozen", "partial", "full"):
        message = f"skipped scratch_cnn x {strategy}: scratch_cnn has no pretrained backbone"
        assert message in result.stdout + result.stderr


def test_config_overrides_on_the_command_line():
    result = snakemake(PROJECT, "-n", "--forceall", "--config", "seeds=[1]", "models=[scratch_cnn,vgg16]")
    assert job_counts(result.stdout)["train"] == 5


@pytest.mark.parametrize("override, expected", [
    ({"models": ["scratch_cnn", "resnet5O"]}, r"'resnet5O' is not one of"),
    ({"strategies": ["frozn"]}, r"'frozn' is not one of"),
    ({"training": {"epochs": -1}}, r"-1 is less than the minimum of 1"),
    ({"training": {"epcohs": 3}}, r"Additional properties are not allowed \('epcohs' was unexpected\)"),
    ({"trainig": {}}, r"'trainig' was unexpected"),
    ({"datasets": {"x": {"path": "/nonexistent/cxr", "manifest": "/nonexistent/m.sha256"}}},
     r"datasets.x.path: folder /nonexistent/cxr does not exist"),
    ({"training": {"epochs": 2, "warmup_epochs": 2}}, r"training.warmup_epochs \(2\) must be smaller"),
])
def test_config_errors_name_the_key_before_any_job(tmp_path, override, expected):
    data = copy_dataset(tmp_path / "data", {"train": 2, "test": 1})
    config = write_config(tmp_path / "c.yaml", data, **override)
    result = snakemake(tmp_path, "--configfile", str(config), "--cores", "1", check=False)
    assert result.returncode != 0
    assert re.search(expected, result.stdout + result.stderr), result.stderr[-3000:]
    assert not (tmp_path / "results").exists()


def test_bad_data_stops_at_verify_naming_the_file(tmp_path):
    data = copy_dataset(tmp_path / "data", {"train": 3, "test": 2})
    victim = sorted((data / "train" / "Normal").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:-10])
    config = write_config(tmp_path / "c.yaml", data)
    result = snakemake(tmp_path, "--configfile", str(config), "--cores", "1", check=False)
    assert result.returncode != 0
    assert f"train/Normal/{victim.name}: manifest" in result.stderr
    assert not list((tmp_path / "results").rglob("train.json"))
    assert not (tmp_path / "logs" / "tiny" / "scratch_cnn").exists()  # no training job started


def test_tiny_study_end_to_end(tiny_study):
    work = tiny_study["workdir"]
    runs = pd.read_csv(work / "results" / "runs.csv")
    assert sorted(zip(runs["model"], runs["strategy"], strict=True)) == [
        ("scratch_cnn", "scratch"), ("vgg16", "partial"), ("vgg16", "scratch")]
    assert (runs["status"] == "ok").all()
    assert runs["accuracy"].between(0, 1).all() and runs["train_seconds"].gt(0).all()
    summary = pd.read_csv(work / "results" / "summary.csv")
    assert len(summary) == 3 and "f1_macro_ci95" in summary
    for run in runs["run_dir"]:
        for name in ("model.weights.h5", "history.csv", "train.json", "predictions.csv",
                     "metrics.json", "gradcam.npz"):
            assert (work / run / name).stat().st_size > 0
        assert not (work / run / "checkpoint").exists()  # removed once the run finished


def test_tiny_study_report_contents(tiny_study):
    html = (tiny_study["workdir"] / "results" / "report.html").read_text()
    assert "These backbones were NOT pretrained" in html and "vgg16" in html
    assert html.count('class="gradcam-cell"') == 3 * 2 * 3  # runs × (2 per class × 3 classes)
    for section in ("Verdict", "All model × strategy combinations", "ROC curves", "Confusion matrices",
                    "Training curves", "Where the models looked: Grad-CAM", "Data checks", "Provenance"):
        assert section in html
    assert "test/Covid/COVID-00012.jpg  =  train/Covid/COVID-00012.jpg" in html  # leakage listed
    assert "scratch_cnn × partial" in html and "no pretrained backbone" in html  # skip listed
    assert "Too few seeds to conclude" in html
    assert XSS_CLASS not in html and "&lt;img src=x onerror=alert(1)&gt; &amp; &#34;q&#34;" in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # self-contained
    assert len(re.findall(r'src="data:image/(png|jpeg);base64,', html)) > 20
