"""``python -m scripts status``: where a study stands, from its work directory: runs
finished, training, queued (with Slurm's reason), failed (with their logs) and not yet
submitted, and the GPU-hours spent so far.

Reads the plan (results/plan.json), each run's ``finished.json`` and log, and asks
Slurm (``squeue``; ``sacct`` where accounting exists) about this directory's train
jobs. Snakemake-free and TensorFlow-free: it runs on the login node beside a running
Snakemake.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from scripts.common.layout import FINISHED_RUN, PLAN

TRAIN_JOB = "rule_train_wildcards_"  # the comment the Slurm executor gives a train job
ATTEMPT = re.compile(r"^== attempt \d+ ", re.MULTILINE)


def slurm_lines(command: list[str]) -> list[str] | None:
    """A Slurm client's output lines; None where it fails (no Slurm, no accounting)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.splitlines() if done.returncode == 0 else None


def train_jobs(listed: list[str], workdir: Path) -> list[dict]:
    """The train jobs of ``workdir`` among `squeue -h -o '%i|%T|%r|%k|%Z'` lines: id,
    state, reason, and the pack (its configuration and first and last seed)."""
    jobs = []
    for line in listed:
        fields = line.split("|", 4)
        if len(fields) != 5 or not fields[3].startswith(TRAIN_JOB):
            continue
        job_id, state, reason, comment, folder = fields
        if Path(folder).resolve() != workdir.resolve():
            continue
        configuration, _, seeds = comment[len(TRAIN_JOB):].rpartition("_")
        first, _, last = seeds.partition("-")
        if first.isdigit() and last.isdigit():
            jobs.append({"id": job_id, "state": state, "reason": reason, "configuration": configuration,
                         "first": int(first), "last": int(last)})
    return jobs


def run_job(run: dict, jobs: list[dict]) -> dict | None:
    """The queued or running train job whose pack holds ``run``."""
    configuration = "_".join(str(run[key]) for key in ("dataset", "model", "strategy", "weights", "fraction"))
    for job in jobs:
        if job["configuration"] == configuration and job["first"] <= int(run["seed"]) <= job["last"]:
            return job
    return None


def run_states(runs: list[dict], workdir: Path, jobs: list[dict]) -> dict[str, list]:
    """Each planned run under one state: ``finished`` (its finished.json), ``training``
    or ``queued`` (a job of its pack is running or pending), ``failed`` (tried, its log
    says so, and no job holds it now) and ``waiting`` (not tried yet)."""
    states = {"finished": [], "training": [], "queued": [], "failed": [], "waiting": []}
    for run in runs:
        log = workdir / run["log_dir"] / "train.log"
        job = run_job(run, jobs)
        if (workdir / run["dir"] / FINISHED_RUN).exists():
            states["finished"].append((run, None))
        elif job and job["state"] in ("RUNNING", "COMPLETING", "CONFIGURING"):
            states["training"].append((run, job))
        elif job and job["state"] in ("PENDING", "REQUEUED", "SUSPENDED"):
            states["queued"].append((run, job))
        elif log.exists() and ATTEMPT.search(log.read_text(errors="replace")):
            states["failed"].append((run, log))
        else:
            states["waiting"].append((run, None))
    return states


def finished_gpu_hours(runs: list[dict], workdir: Path) -> float:
    """The training time of the finished runs (their finished.json ``wall_seconds``), in hours."""
    seconds = 0.0
    for run in runs:
        record = workdir / run["dir"] / FINISHED_RUN
        if record.exists():
            seconds += json.loads(record.read_text()).get("wall_seconds", 0)
    return seconds / 3600


def allocated_gpu_hours(listed: list[str], workdir: Path) -> float:
    """GPU-hours Slurm accounted to this directory's jobs, from `sacct -X -n -P
    --format=JobIDRaw,ElapsedRaw,AllocTRES,WorkDir` lines: elapsed seconds x allocated GPUs."""
    hours = 0.0
    for line in listed:
        fields = line.split("|")
        if len(fields) < 4 or Path(fields[3]).resolve() != workdir.resolve() or not fields[1].isdigit():
            continue
        gpus = re.search(r"gres/gpu(?::[^=,]*)?=(\d+)", fields[2])
        hours += int(fields[1]) * (int(gpus[1]) if gpus else 0) / 3600
    return hours


def status_lines(workdir: Path, squeue: list[str] | None, sacct: list[str] | None, shown: int = 20) -> list[str]:
    plan = workdir / PLAN
    if not plan.exists():
        return [f"{plan} does not exist: no study has been planned in {workdir} (run snakemake there first)"]
    runs = json.loads(plan.read_text())["runs"]
    jobs = train_jobs(squeue or [], workdir)
    states = run_states(runs, workdir, jobs)
    lines = [f"{len(runs)} runs: " + ", ".join(f"{len(entries)} {state}" for state, entries in states.items())]
    if squeue is None:
        lines.append("  (squeue did not answer: runs in queued or running jobs count as failed or waiting)")
    pending = [job for job in jobs if job["state"] == "PENDING"]
    if pending:
        lines.append(f"{len(pending)} train jobs pending, by Slurm's reason:")
        reasons: dict[str, list[str]] = {}
        for job in pending:
            reasons.setdefault(job["reason"], []).append(job["id"])
        lines += [f"  {reason}: {len(ids)} (jobs {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''})"
                  for reason, ids in sorted(reasons.items())]
    if states["failed"]:
        lines.append("failed runs (not in a queued or running job; their logs):")
        lines += [f"  {run['dir']}: {log.relative_to(workdir)}" for run, log in states["failed"][:shown]]
        if len(states["failed"]) > shown:
            lines.append(f"  ... and {len(states['failed']) - shown} more")
    lines.append(f"GPU-hours: finished runs trained {finished_gpu_hours(runs, workdir):.1f}"
                 + ("" if sacct is None else
                    f"; Slurm accounted {allocated_gpu_hours(sacct, workdir):.1f} to this directory's jobs"))
    return lines


def study_status(directory: str = ".") -> None:
    """Print where the study in ``directory`` stands (runs, Slurm's pending reasons,
    failed runs' logs, GPU-hours)."""
    workdir = Path(directory)
    squeue = slurm_lines(["squeue", "--me", "-h", "-o", "%i|%T|%r|%k|%Z"])
    sacct = slurm_lines(["sacct", "-X", "-n", "-P", "-S", "now-365days",
                         "--format=JobIDRaw,ElapsedRaw,AllocTRES,WorkDir"])
    print("\n".join(status_lines(workdir, squeue, sacct)))
