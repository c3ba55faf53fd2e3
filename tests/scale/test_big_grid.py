"""A study of any size finishes: a 10,010-run grid aggregates and reports through
Snakemake, and no shell command carries the grid (Linux caps one argument at 128 KiB)."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
from conftest import PROJECT, copy_dataset, fake_run, snakemake, write_config

from scripts.layout import RUN_FILES

DATASETS = 5
SEEDS = 154  # 5 datasets × (scratch_cnn × scratch + 3 backbones × 4 strategies) × 154 = 10,010 runs


def big_grid_config(tmp_path: Path) -> tuple[Path, list[str]]:
    """The 10,010-run study on a tiny dataset: ``(config file, dataset names)``."""
    data = copy_dataset(tmp_path / "data", {"train": 6, "test": 2}, extra=())
    names = [f"site{i}" for i in range(DATASETS)]
    datasets = {name: {"path": str(data), "manifest": f"{data}.sha256"} for name in names}
    config = write_config(tmp_path / "c.yaml", data, datasets=datasets,
                          models=["scratch_cnn", "vgg16", "resnet50", "efficientnetb0"],
                          strategies=["scratch", "frozen", "partial", "full"], seeds=list(range(1, SEEDS + 1)),
                          evaluation={"bootstrap_resamples": 100}, gradcam={"images_per_class": 1})
    return config, names


def test_ten_thousand_runs_are_at_most_a_thousand_slurm_jobs(tmp_path):
    """The shipped Slurm profile (runs_per_job: 16) on the 10,010-run grid, a dry run: 65
    configurations × ceil(154 seeds / 16) = 650 train jobs, each asking for one GPU. Also
    times what each job's own Snakemake pays before training at this size: parsing the
    study and building the DAG of its one pack."""
    config, _ = big_grid_config(tmp_path)
    dry = snakemake(tmp_path, "--configfile", str(config), "-n", "--profile", str(PROJECT / "profiles/slurm"),
                    timeout=1800)
    jobs = re.findall(r"^rule train:.*?^    resources: (.*?)$", dry.stdout, re.S | re.M)
    assert len(jobs) == DATASETS * 13 * 10 == 650 <= 1_000
    assert all("gpu=1" in job and "runs_per_job=16" in job for job in jobs)
    assert "seeds145-154.json" in dry.stdout  # the last pack of a configuration: 10 seeds
    one_pack = "results/site0/packs/vgg16/full/none/frac1.0/seeds1-16.json"
    started = time.perf_counter()
    inner = snakemake(tmp_path, one_pack, "--configfile", str(config), "-n", "--cores", "1", "--set-resources",
                      "train:runs_per_job=16", timeout=600)
    print(f"one pack job's Snakemake at 10,010 runs (dry run of its target): {time.perf_counter() - started:.1f} s")
    assert one_pack in inner.stdout


def test_ten_thousand_runs_aggregate_and_report(tmp_path):
    config, names = big_grid_config(tmp_path)
    # The real data steps once per dataset, one real split copied to every seed...
    targets = [f"results/{n}/{f}" for n in names for f in
               ("data/images_32px.npy", "data/test_thumbnails.npz", "splits/seed1.csv")]
    snakemake(tmp_path, "--configfile", str(config), "--cores", "2", *targets)
    for name in names:
        for seed in range(2, SEEDS + 1):
            shutil.copyfile(tmp_path / f"results/{name}/splits/seed1.csv",
                            tmp_path / f"results/{name}/splits/seed{seed}.csv")
    # ...and every run's files faked from one template (training is not what is tested).
    index = pd.read_csv(tmp_path / "results/site0/data/index.csv", keep_default_na=False)
    test = index[index["split"] == "test"]
    classes = sorted(index["label"].unique())
    labels = test["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    template = tmp_path / "template"
    probabilities = np.eye(3)[labels] * 0.6 + 0.4 / 3
    runs = _planned_runs(tmp_path, config)
    assert len(runs) == 10_010
    for strategy in ("scratch", "frozen", "partial", "full"):
        fake_run({"dir": str(template / strategy), "strategy": strategy}, RUN_FILES, classes, labels,
                 probabilities, val_f1=0.5, paths=list(test["path"]))
    for run in runs:
        shutil.copytree(template / run["strategy"], tmp_path / run["dir"])

    dry = snakemake(tmp_path, "--configfile", str(config), "-n", "-p")
    commands = re.findall(r"^Shell command: (.*)$", dry.stdout, re.M)
    assert set(re.findall(r"^(?:local)?rule (\w+):$", dry.stdout, re.M)) == {"aggregate", "report", "all"}
    assert max(len(c) for c in commands) < 10_000
    snakemake(tmp_path, "--configfile", str(config), "--cores", "2", timeout=1800)
    table = pd.read_csv(tmp_path / "results/runs.csv")
    assert len(table) == 10_010 and (table["status"] == "ok").all()
    html = (tmp_path / "results/report.html").read_text()
    assert html.count('id="verdict-') == DATASETS and "10010 of 10010 runs finished" in html


def _planned_runs(work: Path, config: Path) -> list[dict]:
    snakemake(work, "--configfile", str(config), "--cores", "1", "results/plan.json")
    return json.loads((work / "results/plan.json").read_text())["runs"]
