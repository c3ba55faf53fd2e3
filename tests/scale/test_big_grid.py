"""A study of any size finishes: a 10,010-run grid aggregates and reports through
Snakemake, no shell command carries the grid (Linux caps one argument at 128 KiB), and
its report stays small enough to open (under 20 MB; figures drawn from summaries)."""

from __future__ import annotations

import re
import time

import pandas as pd
import pytest
from conftest import CHROMIUM, PROJECT, open_in_chromium, snakemake

from benchmarks.login_node import DATASETS, SEEDS, fabricated_study, finish_runs, study_config

REPORT_LIMIT_BYTES = 20_000_000  # a self-contained page a browser still opens in seconds


def test_ten_thousand_runs_are_at_most_a_thousand_slurm_jobs(tmp_path):
    """The shipped Slurm profile (runs_per_job: 16) on the 10,010-run grid, a dry run: 65
    configurations × ceil(154 seeds / 16) = 650 train jobs, each asking for one GPU. Also
    times what each job's own Snakemake pays before training at this size: parsing the
    study and building the DAG of its one pack."""
    config = study_config(tmp_path, SEEDS, gradcam={"images_per_class": 1},
                          evaluation={"bootstrap_resamples": 100})
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


@pytest.mark.timeout(3600)  # its Snakemake run alone may take 1,800 s on a loaded machine; the default is 900
def test_ten_thousand_runs_aggregate_and_report(tmp_path):
    # The real data steps once per dataset, one real split copied to every seed, and
    # every run's files faked from one template (training is not what is tested).
    config, runs = fabricated_study(tmp_path, SEEDS, gradcam={"images_per_class": 1},
                                    evaluation={"bootstrap_resamples": 100})
    assert len(runs) == 10_010
    finish_runs(tmp_path, runs)

    dry = snakemake(tmp_path, "--configfile", str(config), "-n", "-p")
    commands = re.findall(r"^Shell command: (.*)$", dry.stdout, re.M)
    assert set(re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):$", dry.stdout, re.M)) == {
        "aggregate", "confirm", "report", "all"}
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

