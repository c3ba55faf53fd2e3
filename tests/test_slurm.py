"""The workflow through a real Slurm cluster (tests/slurm/cluster.sh), not a mock."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import PROJECT, copy_dataset, write_config

pytestmark = pytest.mark.skipif(
    os.environ.get("CXR_SLURM") != "1",
    reason="needs the test cluster: run as root through tests/run.sh (starts tests/slurm/cluster.sh)",
)
PROFILE = PROJECT / "tests" / "slurm" / "profile"


def slurm_snakemake(workdir: Path, config: Path, *args: str):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    command = ["timeout", "-s", "KILL", "900", sys.executable, "-m", "snakemake",
               "-s", str(PROJECT / "workflow/Snakefile"), "--directory", str(workdir),
               "--profile", str(PROFILE), "--configfile", str(config), *args]
    started = time.time()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    print(f"snakemake through Slurm: {time.time() - started:.0f} s")
    return result


@pytest.fixture(scope="module")
def slurm_study(tmp_path_factory):
    work = tmp_path_factory.mktemp("slurm")
    data = copy_dataset(work / "data", {"train": 10, "test": 4})
    config = write_config(work / "c.yaml", data, models=["scratch_cnn"], strategies=["scratch"],
                          seeds=[1, 2], training={"image_size": 32, "batch_size": 8, "epochs": 1})
    result = slurm_snakemake(work, config)
    assert result.returncode == 0, result.stderr[-5000:]
    return work, config, result


def test_training_jobs_ran_as_gpu_slurm_jobs(slurm_study):
    work, _, result = slurm_study
    for rule in ("verify", "split", "aggregate", "report"):  # on the login node, not submitted
        assert f"localrule {rule}:" in result.stderr
    runs = pd.read_csv(work / "results/runs.csv", dtype=str)
    assert len(runs) == 2 and (runs["status"] == "ok").all()
    job_ids = set(runs["slurm_job_id"])
    assert all(j.isdigit() for j in job_ids) and len(job_ids) == 2
    assert set(runs["cuda_visible_devices"]) == {"0"}  # the job was granted the (fake) GPU
    for job in job_ids:
        # scontrol still knows the finished job (MinJobAge): it asked for one GPU
        shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
        assert re.search(r"TresPerJob=gres[:/]gpu[:=]1", shown), shown
    html = (work / "results/report.html").read_text()
    for job in job_ids:
        assert f'class="l slurm-job">{job}<' in html


def test_failed_job_is_reported_and_rerun_completes_only_what_is_missing(slurm_study):
    work, config, _ = slurm_study
    finished = work / "results/tiny/runs/scratch_cnn/scratch/seed1/train.json"
    before = finished.stat().st_mtime_ns
    broken_config = work / "broken.yaml"
    settings = json.loads(json.dumps(__import__("yaml").safe_load(config.read_text())))
    settings["seeds"] = [1, 2, 3]
    broken_config.write_text(__import__("yaml").safe_dump(settings))
    split3 = work / "results/tiny/splits/seed3.csv"
    split3.parent.mkdir(parents=True, exist_ok=True)
    split3.write_text("not,a,split\n")  # a corrupt input: the seed-3 training job must fail
    os.utime(split3, (time.time() + 60, time.time() + 60))
    result = slurm_snakemake(work, broken_config, "--rerun-triggers", "mtime")
    assert result.returncode != 0
    log = re.search(r"(\S+/slurm_logs/rule_train/\S+\.log)", result.stderr)
    assert log and Path(log[1]).exists(), result.stderr[-3000:]
    assert finished.stat().st_mtime_ns == before  # the finished run was not redone

    split3.unlink()
    result = slurm_snakemake(work, broken_config)
    assert result.returncode == 0, result.stderr[-4000:]
    assert finished.stat().st_mtime_ns == before
    assert (work / "results/tiny/runs/scratch_cnn/scratch/seed3/train.json").exists()


def test_cancelled_slurm_job_resumes_from_its_checkpoint(tmp_path):
    """scancel (SIGTERM, then SIGKILL: what a time limit or preemption does) after >= 1
    epoch; the rerun submits a new job that continues from the checkpoint."""
    data = copy_dataset(tmp_path / "data", {"train": 16, "test": 4})
    epochs = 30
    config = write_config(tmp_path / "c.yaml", data, models=["scratch_cnn"], strategies=["scratch"],
                          training={"image_size": 32, "batch_size": 16, "epochs": epochs,
                                    "early_stopping_patience": 0})
    run_dir = tmp_path / "results/tiny/runs/scratch_cnn/scratch/seed1"
    state = run_dir / "checkpoint" / "state.json"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    workflow = subprocess.Popen(
        ["timeout", "-s", "KILL", "900", sys.executable, "-m", "snakemake", "-s",
         str(PROJECT / "workflow/Snakefile"), "--directory", str(tmp_path), "--profile", str(PROFILE),
         "--configfile", str(config)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while not (state.exists() and json.loads(state.read_text())["epoch"] >= 1):
        assert time.time() < deadline and workflow.poll() is None, "no checkpoint appeared"
        time.sleep(0.05)
    jobs = subprocess.run(["squeue", "-h", "-o", "%i %k"], capture_output=True, text=True).stdout
    cancelled = next(line.split()[0] for line in jobs.splitlines() if "rule_train" in line)
    subprocess.run(["scancel", cancelled], check=True)
    output = workflow.communicate(timeout=600)[0].decode()
    assert workflow.returncode != 0, output[-2000:]
    killed_at = json.loads(state.read_text())["epoch"]
    assert 1 <= killed_at < epochs and not (run_dir / "train.json").exists()

    result = slurm_snakemake(tmp_path, config)
    assert result.returncode == 0, result.stderr[-4000:]
    info = json.loads((run_dir / "train.json").read_text())
    assert info["resumed_from_epoch"] >= killed_at and info["epochs_run"] == epochs
    assert info["environment"]["slurm_job_id"] not in ("", None, cancelled)  # a new Slurm job
