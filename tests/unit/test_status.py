"""scripts/site/status.py (`python -m scripts status`) on a study folder laid out as the
workflow writes it; Slurm's answers in the formats its clients print. On the test
cluster: tests/slurm/test_slurm.py (a job pending for PartitionTimeLimit, a failed seed)."""

from __future__ import annotations

import json
from pathlib import Path

from scripts.common.layout import PLAN, RUN_DIR, RUN_LOG_DIR
from scripts.site import status

CONFIGURATION = {"dataset": "tiny", "model": "scratch_cnn", "strategy": "scratch", "weights": "none",
                 "fraction": "1.0"}


def study(work: Path, seeds: range) -> list[dict]:
    runs = [{**CONFIGURATION, "seed": seed} for seed in seeds]
    for run in runs:
        run.update(dir=RUN_DIR.format(**run), log_dir=RUN_LOG_DIR.format(**run))
    (work / PLAN).parent.mkdir(parents=True)
    (work / PLAN).write_text(json.dumps({"runs": runs}))
    return runs


def finish(work: Path, run: dict, seconds: float) -> None:
    (work / run["dir"]).mkdir(parents=True)
    (work / run["dir"] / "finished.json").write_text(json.dumps({"wall_seconds": seconds}))


def tried(work: Path, run: dict) -> Path:
    log = work / run["log_dir"] / "train.log"
    log.parent.mkdir(parents=True)
    log.write_text("== attempt 1 2026-01-01T00:00:00+00:00 ==\nTraceback ...\n")
    return log


def test_runs_by_state_pending_reasons_failed_logs_and_gpu_hours(tmp_path):
    runs = study(tmp_path, range(1, 11))
    finish(tmp_path, runs[0], 1800)
    finish(tmp_path, runs[1], 1800)
    tried(tmp_path, runs[2])  # failed: tried, and no job holds it
    tried(tmp_path, runs[3])  # tried before, now in a running job again
    squeue = [f"7|RUNNING|None|rule_train_wildcards_tiny_scratch_cnn_scratch_none_1.0_4-5|{tmp_path}",
              f"8|PENDING|QOSMaxWallDurationPerJobLimit|rule_train_wildcards_tiny_scratch_cnn_scratch_none_1.0_6-8|"
              f"{tmp_path}",
              f"9|PENDING|Priority|rule_train_wildcards_tiny_scratch_cnn_scratch_none_1.0_9-9|{tmp_path}",
              "10|PENDING|Priority|rule_train_wildcards_tiny_scratch_cnn_scratch_none_1.0_10-10|/elsewhere",
              f"11|RUNNING|None|rule_report|{tmp_path}"]
    sacct = [f"7|3600|billing=8,cpu=8,gres/gpu=1,mem=12000M,node=1|{tmp_path}",
             f"12|1800|billing=8,cpu=8,gres/gpu:a100=2,mem=12000M,node=1|{tmp_path}",
             "13|3600|cpu=8,gres/gpu=1|/elsewhere", f"14|600|cpu=1,mem=2000M,node=1|{tmp_path}"]
    lines = status.status_lines(tmp_path, squeue, sacct)
    assert lines[0] == "10 runs: 2 finished, 2 training, 4 queued, 1 failed, 1 waiting"
    assert lines[1:4] == ["2 train jobs pending, by Slurm's reason:", "  Priority: 1 (jobs 9)",
                          "  QOSMaxWallDurationPerJobLimit: 1 (jobs 8)"]
    assert lines[4:6] == ["failed runs (not in a queued or running job; their logs):",
                          f"  {runs[2]['dir']}: {runs[2]['log_dir']}/train.log"]
    assert lines[6] == "GPU-hours: finished runs trained 1.0; Slurm accounted 2.0 to this directory's jobs"


def test_without_slurm_or_a_plan_it_says_so(tmp_path):
    assert "no study has been planned" in status.status_lines(tmp_path, None, None)[0]
    runs = study(tmp_path, range(1, 3))
    tried(tmp_path, runs[0])
    lines = status.status_lines(tmp_path, None, None)
    assert lines[0] == "2 runs: 0 finished, 0 training, 0 queued, 1 failed, 1 waiting"
    assert "squeue did not answer" in lines[1] and lines[-1] == "GPU-hours: finished runs trained 0.0"
