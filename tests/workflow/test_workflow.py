"""The workflow as users run it: dry-runs, config errors, and a tiny real study."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import DEMO_STUDY, KERMANY, PROJECT, XSS_CLASS, copy_dataset, snakemake, write_config

from scripts.common.layout import RUN_FILES


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.fixture(scope="module")
def default_dry_run():
    """One dry run of the default study, shared by the checks that only read it."""
    return snakemake(PROJECT, "--configfile", str(DEMO_STUDY), "-n", "--forceall", "-p")


def test_default_dry_run_lists_one_train_job_per_valid_combination(default_dry_run):
    counts = job_counts(default_dry_run.stdout)
    # (scratch_cnn × scratch + vgg16 × scratch + vgg16 × 4 strategies × 2 weights sources) × 3 seeds
    assert counts["train"] == 30
    assert counts["verify"] == counts["leakage"] == counts["plan"] == counts["thumbnails"] == counts["report"] == 1
    assert counts["split"] == 3 and counts["hed_weights"] == 1
    for strategy in ("frozen", "partial", "full"):
        message = f"skipped scratch_cnn x {strategy}: scratch_cnn has no pretrained backbone"
        assert message in default_dry_run.stdout + default_dry_run.stderr


def test_nothing_large_travels_on_a_command_line(default_dry_run):
    commands = re.findall(r"^Shell command: (.*)$", default_dry_run.stdout, re.M)
    assert len(commands) > 30
    assert max(len(c) for c in commands) < 4000


def test_per_model_training_settings_reach_each_run():
    override = ('training={"epochs": {"default": 4, "scratch_cnn": 2}, "warmup_epochs": 1,'
                ' "partial_stages": {"default": 1, "vgg16": 2}}')
    result = snakemake(PROJECT, "--configfile", str(DEMO_STUDY), "-n", "-p", "--forceall", "--config", override,
                       "weights=none", "models=[scratch_cnn,vgg16,resnet50,efficientnetb0]")
    runs = {}
    for command in re.findall(r"^Shell command: .*?(python -m scripts train-pack .*)$", result.stdout, re.M):
        model = re.search(r"--model (\S+)", command)[1]
        runs[model] = json.loads(re.search(r"--settings '(.*?)'", command)[1])["training"]
    assert {m: (t["epochs"], t["partial_stages"]) for m, t in runs.items()} == {
        "scratch_cnn": (2, 1), "vgg16": (4, 2), "resnet50": (4, 1), "efficientnetb0": (4, 1)}


def test_config_overrides_on_the_command_line():
    result = snakemake(PROJECT, "--configfile", str(DEMO_STUDY), "-n", "--forceall",
                       "--config", "seeds=[1]", "strategies=[scratch,frozen]")
    assert job_counts(result.stdout)["train"] == 1 + 1 + 2  # both models × scratch + vgg16 × frozen × 2 weights


@pytest.mark.parametrize("override, expected", [
    ({"models": ["scratch_cnn", "resnet5O"]}, r"'resnet5O' is not one of"),
    ({"strategies": ["frozn"]}, r"'frozn' is not one of"),
    ({"training": {"epochs": -1}}, r"-1 is less than the minimum of 1"),
    ({"training": {"epcohs": 3}}, r"Additional properties are not allowed \('epcohs' was unexpected\)"),
    ({"trainig": {}}, r"'trainig' was unexpected"),
    ({"datasets": {"x": {"path": "/nonexistent/cxr", "manifest": "/nonexistent/m.sha256"}}},
     r"datasets.x.path: folder /nonexistent/cxr does not exist"),
    ({"training": {"epochs": 2, "warmup_epochs": 2}}, r"training.warmup_epochs \(2\) must be smaller"),
    ({"weights": [{"name": "a", "source": "imagenet"}, {"name": "a", "source": "none"}]},
     r"distinct names; repeated: \['a'\]"),
])
def test_config_errors_name_the_key_before_any_job(tmp_path, override, expected):
    data = copy_dataset(tmp_path / "data", {"train": 2, "test": 1})
    config = write_config(tmp_path / "c.yaml", data, **override)
    result = snakemake(tmp_path, "--configfile", str(config), "--cores", "1", check=False)
    assert result.returncode != 0
    assert re.search(expected, result.stdout + result.stderr), result.stderr[-3000:]
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("positive, expected", [
    (None, r"datasets.tiny.positive_class: required for a two-class dataset \(one of \['Covid', 'Normal'\]\)"),
    ("Pneumonia", r"datasets.tiny.positive_class: 'Pneumonia' is not one of \['Covid', 'Normal'\]"),
])
def test_two_class_datasets_need_a_positive_class(tmp_path, positive, expected):
    data = copy_dataset(tmp_path / "data", {"train": 2, "test": 1}, extra=())
    shutil.rmtree(data / "train" / "Viral Pneumonia")
    shutil.rmtree(data / "test" / "Viral Pneumonia")
    from scripts.data.manifest import make_manifest

    (tmp_path / "data.sha256").write_text(make_manifest(data))
    config = write_config(tmp_path / "c.yaml", data)
    settings = yaml.safe_load(config.read_text())
    if positive:
        settings["datasets"]["tiny"]["positive_class"] = positive
    config.write_text(yaml.safe_dump(settings))
    result = snakemake(tmp_path, "--configfile", str(config), "-n", check=False)
    assert result.returncode != 0 and re.search(expected, result.stdout + result.stderr), result.stderr[-2000:]


def test_numbered_class_folders_name_class_1_positive_with_its_prevalence(tmp_path):
    """Class folders 0 and 1, as MedMNIST exports and many Kaggle sets name them, and
    `positive_class: "1"` in the YAML file: the study plans, runs, and the report names
    class 1 as positive with the training split's prevalence of it (0.0 when a label
    column is read as numbers)."""
    from scripts.data.manifest import make_manifest

    data = tmp_path / "data"
    for split, sizes in {"train": {"NORMAL": 10, "PNEUMONIA": 20}, "test": {"NORMAL": 6, "PNEUMONIA": 6}}.items():
        for name, label in (("NORMAL", "0"), ("PNEUMONIA", "1")):
            (data / split / label).mkdir(parents=True)
            for image in sorted((KERMANY / split / name).iterdir())[:sizes[name]]:
                shutil.copy2(image, data / split / label / image.name)
    (tmp_path / "data.sha256").write_text(make_manifest(data))
    config = write_config(tmp_path / "c.yaml", data, models=["scratch_cnn"], strategies=["scratch"], seeds=[1, 2])
    config.write_text(config.read_text().replace("manifest:", "positive_class: '1'\n    manifest:"))
    assert yaml.safe_load(config.read_text())["datasets"]["tiny"]["positive_class"] == "1"

    snakemake(tmp_path, "--configfile", str(config), "--cores", "2")
    assert json.loads((tmp_path / "results/plan.json").read_text())["config"]["datasets"]["tiny"][
        "positive_class"] == "1"
    split = pd.read_csv(tmp_path / "results/tiny/splits/seed1.csv", dtype={"label": str})
    prevalence = (split.loc[split["subset"] == "train", "label"] == "1").mean()
    assert 0.6 < prevalence < 0.7
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", (tmp_path / "results/report.html").read_text()))
    assert "positive class (sensitivity): 1" in text
    assert f"Prevalence of 1: training {prevalence:.3f}, validation" in text


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
    plan = json.loads((work / "results" / "plan.json").read_text())
    runs = pd.read_csv(work / "results" / "runs.csv")
    assert sorted(zip(runs["model"], runs["strategy"], strict=True)) == [
        ("scratch_cnn", "scratch"), ("vgg16", "partial"), ("vgg16", "scratch")]
    assert (runs["status"] == "ok").all()
    assert list(runs["dir"]) == [run["dir"] for run in plan["runs"]]
    assert plan["config"]["training"]["dropout"] == 0.3  # defaults filled in from the schema
    assert plan["skipped"][0]["model"] == "scratch_cnn"
    for run in plan["runs"]:
        for name in RUN_FILES.values():
            assert (work / run["dir"] / name).stat().st_size > 0
        assert not (work / run["dir"] / "checkpoint").exists()  # removed once the run finished
        info = json.loads((work / run["dir"] / "train.json").read_text())
        assert (info["model"], info["strategy"], info["seed"]) == (run["model"], run["strategy"], run["seed"])
        assert info["n_train"] + info["n_val"] + info["n_test"] <= 24 * 3 + 8 * 3 + 2


def test_tiny_study_report_contents(tiny_study):
    html = (tiny_study["workdir"] / "results" / "report.html").read_text()
    assert "These backbones were NOT pretrained:</strong> vgg16." in html
    # the verdict shows the configuration the aggregate chose on validation, with its numbers
    chosen = json.loads((tiny_study["workdir"] / "results" / "verdict.json").read_text())["datasets"]["tiny"]["chosen"]
    summary = pd.read_csv(tiny_study["workdir"] / "results" / "summary.csv")
    best = summary.loc[summary["val_f1_macro"].idxmax()]
    assert (chosen["model"], chosen["strategy"]) == (best["model"], best["strategy"])
    verdict = html.split('class="verdict"')[1].split("</table>")[0]
    assert f'<span class="chosen">{best["model"]} · {best["strategy"]}' in verdict
    assert f"<td>{best['accuracy']:.3f}</td>" in verdict and f"<td>{best['f1_macro']:.3f}</td>" in verdict
    assert html.count('class="gradcam-cell"') == 3 * 2 * 3  # runs × (2 per class × 3 classes)
    for section in ("Verdict", "Chosen on validation", "All configurations", "ROC curves", "Confusion matrices",
                    "Training curves", "Where the models looked: Grad-CAM", "Data checks", "Provenance",
                    "95% interval over test images", "Colour overlays:"):
        assert section in html
    assert "test/Covid/COVID-00012.jpg  =  train/Covid/COVID-00012.jpg" in html  # leakage listed
    assert "<strong>removed from the test set</strong>" in html  # leakage: drop, the default
    assert "scratch_cnn × partial" in html and "no pretrained backbone" in html  # skip listed
    assert "Too few seeds to conclude" in html
    assert "Per class (one-vs-rest" in html and "Recall (macro, one-vs-rest)" in html
    # one seed: no seed ensembles; the 3 configurations averaged; three classes: argmax
    assert 'id="ensembles-1"' in html and "top-3 by validation <strong>(best ensemble)</strong>" in html
    assert "each test image goes to its most probable class (argmax)" in html
    assert XSS_CLASS not in html and "&lt;img src=x onerror=alert(1)&gt; &amp; &#34;q&#34;" in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # self-contained
    assert len(re.findall(r'src="data:image/(png|jpeg);base64,', html)) > 20


def test_snakemake_report_has_the_study_report_and_figures(tiny_study, tmp_path):
    work = tiny_study["workdir"]
    archive = tmp_path / "snakemake-report.zip"
    snakemake(work, "--configfile", str(tiny_study["config"]), "--report", str(archive))
    files = {Path(name).name for name in zipfile.ZipFile(archive).namelist()}
    assert "report.html" in files
    assert {f"tiny-{figure}.png" for figure in ("roc", "pr", "confusion", "metric_f1", "loss")} <= files


def test_keep_going_then_report_the_finished_runs(tmp_path):
    """One failed run does not block the report of the others when asked for."""
    data = copy_dataset(tmp_path / "data", {"train": 10, "test": 3})
    config = write_config(tmp_path / "c.yaml", data, models=["scratch_cnn"], strategies=["scratch"],
                          seeds=[1, 2], training={"image_size": 32, "batch_size": 8, "epochs": 1})
    snakemake(tmp_path, "--configfile", str(config), "--cores", "1", "--until", "split")
    broken = tmp_path / "results/tiny/splits/seed2.csv"
    broken.write_text("not,a,split\n")  # seed 2's training job will fail on it
    result = snakemake(tmp_path, "--configfile", str(config), "--cores", "1", "--keep-going", check=False)
    assert result.returncode != 0 and "Error in rule train" in result.stderr
    finished = tmp_path / "results/tiny/runs/scratch_cnn/scratch/none/frac1.0/seed1/metrics.json"
    before = finished.stat().st_mtime_ns
    assert not (tmp_path / "results/report.html").exists()

    snakemake(tmp_path, "--configfile", str(config), "--cores", "1", "--config", "allow_missing_runs=true")
    html = (tmp_path / "results/report.html").read_text()
    assert "1 run failed or did not finish" in html
    assert "scratch_cnn · scratch · weights none · fraction 1.0 · seed 2" in html
    assert "logs/tiny/scratch_cnn/scratch/none/frac1.0/seed2/" in html
    runs = pd.read_csv(tmp_path / "results/runs.csv")
    assert dict(zip(runs["seed"], runs["status"], strict=True)) == {1: "ok", 2: "missing"}
    assert finished.stat().st_mtime_ns == before  # the finished run was kept as it was


def test_slurm_profile_dry_run_on_a_machine_without_slurm(tmp_path):
    """Only `which` on PATH besides Python: no sbatch, squeue or sacct to be found."""
    (tmp_path / "which").symlink_to(shutil.which("which"))
    env = {"HOME": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:{tmp_path}"}
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", "--profile",
                             "profiles/slurm", "--configfile", "config/demo.yaml"],
                            cwd=PROJECT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert job_counts(output)["train"] == 10  # 30 runs, packed: the 3 seeds of a configuration in a job
    train_jobs = re.findall(r"^rule train:.*?^    resources: (.*?)$", output, re.S | re.M)
    assert len(train_jobs) == 10
    assert all("gpu=1" in job and "slurm_partition=gpu" in job for job in train_jobs)


def test_the_kermany_example_dry_runs_before_its_download(tmp_path):
    """The example as shipped, in a fresh folder: the Kaggle download and the ImageNet
    weights come first, then 5 models × 5 strategies (less the scratch CNN's skips) × 5 seeds."""
    result = snakemake(tmp_path, "-n", "--configfile", str(PROJECT / "config/examples/kermany-pneumonia.yaml"))
    counts = job_counts(result.stdout)
    assert counts["download_dataset"] == 1 and counts["fetch_weights"] == 4
    assert counts["train"] == (1 + 4 * 5) * 5


def test_a_val_folder_and_leakage_drop_end_to_end(tmp_path):
    """A real val/ folder big enough to use, and `leakage: drop`: the val/ images are the
    validation set, the test copy of a training image is left out of the test metrics,
    and the report counts what was evaluated, not what is on disk."""
    from scripts.data.manifest import make_manifest

    data = copy_dataset(tmp_path / "data", {"train": 8, "test": 3})  # + COVID-00012 in train and test
    for class_dir in (data / "train").iterdir():
        (data / "val" / class_dir.name).mkdir(parents=True)
        for image in sorted(class_dir.iterdir())[:3]:
            if image.name != "COVID-00012.jpg":
                image.rename(data / "val" / class_dir.name / image.name)
    (tmp_path / "data.sha256").write_text(make_manifest(data))
    config = write_config(tmp_path / "c.yaml", data, models=["scratch_cnn"], strategies=["scratch"],
                          data={"leakage": "drop", "min_val_per_class": 3},
                          training={"image_size": 32, "batch_size": 8, "epochs": 1})
    snakemake(tmp_path, "--configfile", str(config), "--cores", "2")
    split = pd.read_csv(tmp_path / "results/tiny/splits/seed1.csv", keep_default_na=False)
    assert set(split.loc[split["subset"] == "val", "path"]) == {
        str(p.relative_to(data)) for p in (data / "val").rglob("*.*")}
    assert list(split.loc[split["subset"] == "dropped", "path"]) == ["test/Covid/COVID-00012.jpg"]
    info = json.loads((tmp_path / "results/tiny/runs/scratch_cnn/scratch/none/frac1.0/seed1/train.json")
                      .read_text())
    on_disk = len(list((data / "test").rglob("*.*")))
    assert (info["n_val"], info["n_test"]) == (9, on_disk - 1)
    html = (tmp_path / "results/report.html").read_text()
    assert f'<span class="n-test">{on_disk - 1}</span> test images' in html
    assert "the val/test copies were excluded" in html and "is the validation set" in html
    assert "<strong>removed from the test set</strong>" in html
