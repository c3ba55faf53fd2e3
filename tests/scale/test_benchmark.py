"""Smoke test of ``python -m benchmarks``: the cheap sections in quick mode
write the CSV and Markdown tables with the expected rows and positive numbers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
from conftest import PROJECT

QUICK_GRID = (1, 2)  # benchmarks.__main__.Scale.quick(): datasets, seeds of the 1x grid
# Phases the benchmark times directly (start and end of the work itself), as opposed to
# estimates and remainders derived from them.
TIMED_PHASES = ("python start (interpreter, site, tracer)", "import tensorflow + keras",
                "build model (+ load weights)", "end-to-end epochs (validation passes, checkpoints included)",
                "test + validation pass, Grad-CAM, metrics (evaluate)", "whole job", "peak RSS (VmHWM)")


def expected_jobs(datasets: int, seeds: int) -> int:
    """Jobs of the benchmark's dry-run grid, counted by hand from the rules.

    Per dataset and seed: 17 train runs (scratch_cnn x scratch, 4 backbones x 4
    strategies; scratch_cnn's other 3 strategies are skipped) and 1 split; per
    dataset: verify, leakage, prepare_images, thumbnails; once: plan, aggregate, confirm,
    report, all.
    """
    return 18 * datasets * seeds + 4 * datasets + 5


def test_quick_benchmark_writes_tables(tmp_path):
    """Fails if a section stops measuring (a row missing, negative or not finite, or a
    directly timed phase not positive), if the dry run's job count or the own-code share is
    misread from Snakemake or cProfile, or if the Markdown table is not written."""
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "3", "4",
                           "--output", str(tmp_path)], cwd=PROJECT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    table = pd.read_csv(tmp_path / "benchmark.csv", keep_default_na=False)
    assert set(table["section"]) == {"3 snakemake -n", "4 train job cost"}
    # Any value may round to 0.0 on a quiet or loaded machine: estimates (a first call minus
    # the later calls' rate), remainders and sub-millisecond pieces. None may be negative.
    assert (np.isfinite(table["value"]) & (table["value"] >= 0)).all(), table[~(table["value"] >= 0)]

    dry_runs = table[table["measurement"].str.contains(" jobs$", regex=True)]
    datasets, seeds = QUICK_GRID
    counts = [int(m.rsplit(": ", 1)[1].split()[0]) for m in dry_runs["measurement"]]
    assert counts == [expected_jobs(datasets, seeds * f) for f in (1, 2, 4)] == [45, 81, 153]
    share = table.loc[table["measurement"] == "... our code's share of the dry run", "value"].item()
    assert 0 < share < 100

    job = table[table["section"] == "4 train job cost"].set_index("measurement")["value"]
    for piece in TIMED_PHASES:  # each takes at least tens of milliseconds on any machine
        assert job[f"scratch CNN 32 px: {piece}"] > 0, piece
    whole = job["scratch CNN 32 px: whole job"]
    assert job["scratch CNN 32 px: fixed cost (all but the epochs and feature extraction)"] < whole
    # 317 demo images of 32 x 32 x 3 bytes
    assert job["scratch CNN 32 px: decoded image cache (mmap'd file)"] == round(317 * 32 * 32 * 3 / 2**20, 3)

    markdown = (tmp_path / "benchmark.md").read_text()
    assert "## 3 snakemake -n" in markdown and "## 4 train job cost" in markdown
    assert "| measurement" in markdown and "|:--" in markdown


def test_login_node_benchmark_measures_each_step_in_its_own_process(tmp_path):
    """``python -m benchmarks.login_node`` on a 1-seed grid (65 runs): every step has a
    row with a positive wall clock and peak RSS (read from GNU time's report), and the
    grid's rows count its runs. Fails if a step stops being measured or its report is
    misread, or if aggregate does not find the fabricated runs (the benchmark checks)."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.login_node", "--seeds", "1", "--output",
                           str(tmp_path)], cwd=PROJECT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    table = pd.read_csv(tmp_path / "login_node.csv").set_index("measurement")
    assert len(table) == 9 and (table[["wall_s", "peak_rss_mb"]] > 0).all().all()
    assert list(table["runs"]) == [0] * 4 + [65] * 5
    # the dry run as a user starts it (the shipped Slurm profile): one pack per configuration at 1 seed
    (jobs,) = table["jobs"].dropna()
    assert jobs == "plan 1, train 65, aggregate 1, confirm 1, report 1", jobs
