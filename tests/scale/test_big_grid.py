"""A study of any size finishes: a 10,010-run grid aggregates and reports through
Snakemake, no shell command carries the grid (Linux caps one argument at 128 KiB), and
its report stays small enough to open (under 20 MB; figures drawn from summaries)."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CHROMIUM, copy_dataset, fake_run, open_in_chromium, snakemake, write_config

from scripts.layout import RUN_FILES

DATASETS = 5
SEEDS = 154  # 5 datasets × (scratch_cnn × scratch + 3 backbones × 4 strategies) × 154 = 10,010 runs
REPORT_LIMIT_BYTES = 20_000_000  # a self-contained page a browser still opens in seconds


@pytest.mark.timeout(3600)  # its Snakemake run alone may take 1,800 s on a loaded machine; the default is 900
def test_ten_thousand_runs_aggregate_and_report(tmp_path):
    data = copy_dataset(tmp_path / "data", {"train": 6, "test": 2}, extra=())
    names = [f"site{i}" for i in range(DATASETS)]
    datasets = {name: {"path": str(data), "manifest": f"{data}.sha256"} for name in names}
    config = write_config(tmp_path / "c.yaml", data, datasets=datasets,
                          models=["scratch_cnn", "vgg16", "resnet50", "efficientnetb0"],
                          strategies=["scratch", "frozen", "partial", "full"], seeds=list(range(1, SEEDS + 1)),
                          evaluation={"bootstrap_resamples": 100}, gradcam={"images_per_class": 1})
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
    assert html.count('<div class="decision" id="decision-') == DATASETS
    size = (tmp_path / "results/report.html").stat().st_size
    print(f"report: {size / 1e6:.1f} MB")
    assert size < REPORT_LIMIT_BYTES, f"report.html is {size / 1e6:.1f} MB"
    if CHROMIUM:
        started = time.monotonic()
        page = open_in_chromium(tmp_path / "results/report.html", tmp_path)
        print(f"Chromium: loaded and screenshot in {time.monotonic() - started:.1f} s")
        assert [i["alt"] for i in page["images"] if not i["ok"]] == [] and page["outside"] == []


def _planned_runs(work: Path, config: Path) -> list[dict]:
    snakemake(work, "--configfile", str(config), "--cores", "1", "results/plan.json")
    return json.loads((work / "results/plan.json").read_text())["runs"]
