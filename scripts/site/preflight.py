"""What a Slurm run will cost, and whether Slurm will run its jobs, asked before the
first submission (workflow/rules/site.smk calls it in ``onstart``).

A job whose time limit is above its partition's MaxTime or its QOS's MaxWall is accepted
by a site with ``EnforcePartLimits=NO`` and then pends for ever (reason
``PartitionTimeLimit``/``QOSMaxWallDurationPerJobLimit``), and ``sbatch --test-only``
may not say so: those limits are read and compared here. Anything else Slurm refuses
(``--gpus`` on a ``select/cons_res`` site, an account or QOS that accounting rejects,
more memory than any node has) is found by ``sbatch --test-only``, once per distinct
job shape, quoting Slurm's reason.

Snakemake-free: the jobs arrive as :class:`PlannedJob` (scripts/site/snakemake_internals.py
``submitted_jobs`` builds them from the DAG).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field

# Bytes a model parameter takes in a saved weights file (float32).
BYTES_PER_PARAMETER = 4
# A checkpoint holds the latest epoch's weights with Adam's two moments (3x the weights)
# and the best epoch's weights (1x): scripts/train/checkpoint.py.
CHECKPOINT_WEIGHT_COPIES = 4


@dataclass
class PlannedJob:
    """One job Snakemake will submit: its rule, the wildcards that name it, its
    resources at each attempt (attempt 1 first) and, per attempt, the sbatch command
    the executor would run."""

    rule: str
    name: str
    resources: list[dict]
    commands: list[str] = field(default_factory=list)

    @property
    def gpus(self) -> int:
        first = self.resources[0]
        gpus = first.get("gpu") or 0
        if not gpus and "gpu" in str(first.get("gres") or ""):
            match = re.search(r":(\d+)$", str(first["gres"]))
            gpus = int(match[1]) if match else 1
        return int(gpus)

    def minutes(self, attempt: int) -> float:
        return float(self.resources[attempt - 1].get("runtime") or 0)


# ---- Slurm's limits --------------------------------------------------------------------

def slurm_minutes(text: str) -> float | None:
    """A Slurm time ("2-00:00:00", "30:00", "90", "UNLIMITED") in minutes; None: no limit."""
    text = text.strip()
    if not text or text.upper() in ("UNLIMITED", "INFINITE", "NONE", "N/A"):
        return None
    days, _, clock = text.rpartition("-")
    parts = [int(part) for part in clock.split(":")]
    if days:  # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:  # HH:MM:SS
        hours, minutes, seconds = parts
    else:  # MM, MM:SS
        hours, minutes, seconds = 0, parts[0], (parts + [0])[1]
    return int(days or 0) * 1440 + hours * 60 + minutes + seconds / 60


def parse_partitions(shown: str) -> tuple[dict[str, dict[str, str]], str | None]:
    """`scontrol -o show partition` output: {partition: its fields}, the default partition."""
    partitions, default = {}, None
    for line in shown.splitlines():
        fields = dict(re.findall(r"(\S+?)=(\S*)", line))
        if "PartitionName" in fields:
            partitions[fields["PartitionName"]] = fields
            if fields.get("Default") == "YES":
                default = fields["PartitionName"]
    return partitions, default


def parse_qos(listed: str) -> dict[str, float | None]:
    """`sacctmgr -nP show qos format=Name,MaxWall` output: {qos: MaxWall minutes or None}."""
    limits = {}
    for line in listed.splitlines():
        name, _, wall = line.partition("|")
        if name.strip():
            limits[name.strip()] = slurm_minutes(wall)
    return limits


def run_text(command: list[str]) -> str | None:
    """A Slurm client's output; None where it fails (no accounting, no such command)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def resource_key(rule: str, name: str, profile: dict) -> str:
    """The profile key that sets resource ``name`` of ``rule``."""
    specific = f"set-resources.{rule}.{name}"
    return specific if specific in profile else f"default-resources.{name}"


def time_limit_problems(jobs: list[PlannedJob], partitions: dict, default_partition: str | None,
                        qos_limits: dict | None, profile: dict, executor_qos: str | None = None) -> list[str]:
    """Jobs whose limit at some attempt exceeds their partition's MaxTime or their QOS's
    MaxWall (the job's own QOS, else the partition's), one line per rule and limit,
    naming the profile key to change. ``qos_limits``: None where accounting is absent."""
    problems: dict[tuple, str] = {}
    for job in jobs:
        for attempt, resources in enumerate(job.resources, start=1):
            partition = resources.get("slurm_partition") or default_partition
            fields = partitions.get(partition, {})
            minutes = job.minutes(attempt)
            limits = [(slurm_minutes(fields.get("MaxTime", "")), f"partition {partition}'s MaxTime")]
            qos = resources.get("qos") or executor_qos or (fields.get("QoS") if fields.get("QoS") != "N/A" else None)
            if qos and qos_limits is not None:
                limits.append((qos_limits.get(qos), f"QOS {qos}'s MaxWall"))
            for limit, what in limits:
                if limit is None or minutes <= limit or (job.rule, what) in problems:
                    continue
                key = ("set-resources.train.max_runtime" if job.rule == "train"
                       else resource_key(job.rule, "runtime", profile))
                problems[(job.rule, what)] = (
                    f"{job.rule} job {job.name} asks for {minutes:g} min at attempt {attempt}, more than "
                    f"{what} ({limit:g} min): Slurm would keep it pending for ever. Set {key} to at most "
                    f"{limit:g}, or choose another partition "
                    f"({resource_key(job.rule, 'slurm_partition', profile)}).")
    return list(problems.values())


# ---- sbatch --test-only ----------------------------------------------------------------

def test_only_command(command: str) -> str:
    """The executor's sbatch command as a test submission (nothing is queued)."""
    return command.replace("sbatch --parsable", "sbatch --test-only", 1) + " --wrap=true"


def shape(command: str) -> str:
    """What Slurm judges of a submission: the command without the job's own names."""
    return re.sub(r"--(job-name|output|comment) \S+ ", "", command)


def refusals(jobs: list[PlannedJob], run=subprocess.run) -> list[str]:
    """`sbatch --test-only` once per distinct job shape (every attempt's); Slurm's own
    reason for each one it refuses."""
    problems, seen = [], set()
    for job in jobs:
        for attempt, command in enumerate(job.commands, start=1):
            if shape(command) in seen:
                continue
            seen.add(shape(command))
            try:
                answer = run(test_only_command(command), shell=True, capture_output=True, text=True, timeout=120)
            except subprocess.TimeoutExpired:
                continue  # a controller too slow to answer refuses nothing
            if answer.returncode != 0:
                reason = " ".join((answer.stderr or answer.stdout).split())
                problems.append(f"sbatch --test-only refuses the {job.rule} job {job.name} (attempt {attempt}): "
                                f"{reason} [{command.split(' --wrap')[0]}]")
    return problems


# ---- What the study costs ----------------------------------------------------------------

def gpu_hours(jobs: list[PlannedJob], attempts: int) -> float:
    """GPU-hours that the jobs' time limits request over their first ``attempts``
    attempts (each failed attempt spending its whole limit)."""
    return sum(job.gpus * sum(job.minutes(a) for a in range(1, attempts + 1)) for job in jobs) / 60


def disk_bytes(runs: list[dict], parameters: dict[str, int], weights_bytes: int, runs_at_once_total: int) -> dict:
    """What the runs to train will write: each run's saved model; the checkpoints of the
    runs training at once (``runs_at_once_total``: jobs at once x runs_at_once; a run's
    checkpoint is deleted once it finished); the pretrained weight files."""
    saved = [parameters[run["model"]] * BYTES_PER_PARAMETER for run in runs]
    largest = sorted(saved, reverse=True)[:runs_at_once_total]
    return {"run files": sum(saved), "checkpoints": sum(largest) * CHECKPOINT_WEIGHT_COPIES,
            "weights": weights_bytes}


def human_bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return ""


def hours(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def summary(jobs: list[PlannedJob], login_jobs: int, retries: int, disk: dict) -> list[str]:
    """The lines printed before the first submission."""
    gpu_jobs = [job for job in jobs if job.gpus]
    attempts = retries + 1
    last = ("" if retries == 0 else
            f"; at worst, every job failing its {attempts} attempts: {hours(gpu_hours(gpu_jobs, attempts))}")
    return [
        f"Slurm pre-flight: jobs to submit: {len(gpu_jobs)} GPU, {len(jobs) - len(gpu_jobs)} CPU; "
        f"{login_jobs} run on this node",
        f"  GPU-hours requested (time limit x GPUs): {hours(gpu_hours(gpu_jobs, 1))} at attempt 1{last}",
        "  disk the training writes: " + ", ".join(f"{name} {human_bytes(size)}" for name, size in disk.items())
        + " (model weights; tables and Grad-CAM maps add little)",
    ]


def preflight_error(problems: list[str], profile: str | None) -> str:
    return ("Slurm would not run every job as submitted; nothing was submitted:\n  " + "\n  ".join(problems)
            + f"\nChange the keys named above in {profile or 'your Slurm profile'} (config/README.md, "
            "section 'Slurm profile'; the limits: `scontrol show partition`, `sacctmgr show qos`).")

