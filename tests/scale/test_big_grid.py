"""A study of any size finishes: a 10,010-run grid aggregates and reports through
Snakemake, no shell command carries the grid (Linux caps one argument at 128 KiB), and
its report stays small enough to open (under 20 MB; figures drawn from summaries)."""

from __future__ import annotations

import re
import time

import pandas as pd
import pytest
from conftest import CHROMIUM, open_in_chromium, snakemake

from benchmarks.login_node import DATASETS, SEEDS, fabricated_study, finish_runs

REPORT_LIMIT_BYTES = 20_000_000  # a self-contained page a browser still opens in seconds


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

