"""Preempted Slurm jobs come back, on every site type.

Where a site preempts with ``PreemptMode=REQUEUE``, Slurm itself puts a preempted job
back in the queue, and the pack resumes from its checkpoint. With ``PreemptMode=CANCEL``
the job ends in state ``PREEMPTED``, which snakemake-executor-plugin-slurm (2.8) counts
as still running; with ``slurm-status-command: squeue`` the job then vanishes from
squeue after ``MinJobAge`` and the plugin waits for it too. Either way Snakemake would
wait for ever. While a Slurm run goes, this watch lists the run's preempted jobs with
squeue and requeues each (``scontrol requeue``, what submitit does for its jobs): the
same job id queues again, restarts, resumes from its checkpoint and ends as the plugin
expects. It polls well within ``MinJobAge``, so a preempted job is requeued before
squeue forgets it.
"""

from __future__ import annotations

import subprocess
import threading
import time

# How often the watch asks squeue at most: the plugin polls at most every 180 s.
LONGEST_POLL_SECONDS = 30.0


def poll_seconds(min_job_age: int | None) -> float:
    """Seconds between two looks at the queue: a quarter of ``MinJobAge`` (how long
    squeue still lists an ended job), at most LONGEST_POLL_SECONDS, at least 1 s."""
    if min_job_age is None:
        return LONGEST_POLL_SECONDS
    return max(1.0, min(LONGEST_POLL_SECONDS, min_job_age / 4))


def squeue_command(run_id: str) -> list[str]:
    """squeue listing the preempted jobs of one Snakemake run (the plugin names every
    job of a run by its run id)."""
    return ["squeue", "--noheader", "--states=PREEMPTED", "--name", run_id, "--format=%i|%k"]


def preempted_jobs(listed: str) -> list[tuple[str, str]]:
    """``(job id, comment)`` of each line of `squeue --format=%i|%k` (the plugin puts
    the rule and wildcards in the comment)."""
    jobs = []
    for line in listed.splitlines():
        job, _, comment = line.strip().partition("|")
        if job:
            jobs.append((job, comment))
    return jobs


def requeue_outcome(job: str, comment: str, returncode: int, stderr: str) -> tuple[str, str]:
    """What to log after `scontrol requeue <job>`: ``(level, message)``; level "info",
    "error", or "" where there is nothing to say (Slurm had requeued the job already)."""
    if returncode == 0:
        return "info", (
            f"Slurm job {job} ({comment}) was preempted and cancelled (PreemptMode=CANCEL); "
            "requeued it: it restarts as the same job and resumes from its checkpoint."
        )
    if "pending" in stderr.lower():  # requeued meanwhile (PreemptMode=REQUEUE)
        return "", ""
    return "error", (
        f"Slurm job {job} ({comment}) was preempted and `scontrol requeue {job}` failed: "
        f"{stderr.strip() or f'exit status {returncode}'}. Snakemake waits for it for ever: "
        "stop Snakemake (Ctrl-C) and start it again; the pack resumes from its checkpoint. "
        "Where requeueing is disabled (JobRequeue=0), the profile's `slurm-requeue: true` "
        "allows it."
    )


def requeue_preempted(run_id: str, logger, run=subprocess.run) -> list[str]:
    """One look at the queue: requeue each preempted job of the run; returns their ids."""
    try:
        listed = run(squeue_command(run_id), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        logger.warning(f"squeue for preempted jobs failed: {error}")
        return []
    if listed.returncode != 0:
        logger.warning(f"squeue for preempted jobs failed: {listed.stderr.strip()}")
        return []
    requeued = []
    for job, comment in preempted_jobs(listed.stdout):
        try:
            done = run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
            returncode, stderr = done.returncode, done.stderr
        except (OSError, subprocess.TimeoutExpired) as error:
            returncode, stderr = 1, str(error)
        level, message = requeue_outcome(job, comment, returncode, stderr)
        if level == "info":
            logger.warning(message)
            requeued.append(job)
        elif level == "error":
            logger.error(message)
    return requeued


def start_watch(run_id: str, min_job_age: int | None, logger) -> threading.Thread:
    """Requeue the run's preempted jobs every poll_seconds(min_job_age) until Snakemake
    exits (a daemon thread: it never keeps Snakemake alive)."""
    interval = poll_seconds(min_job_age)

    def watch():
        while True:
            time.sleep(interval)
            try:
                requeue_preempted(run_id, logger)
            except Exception as error:  # the watch must outlive one bad look at the queue
                logger.warning(f"looking for preempted Slurm jobs failed: {error!r}")

    thread = threading.Thread(target=watch, name="requeue-preempted-slurm-jobs", daemon=True)
    thread.start()
    return thread
