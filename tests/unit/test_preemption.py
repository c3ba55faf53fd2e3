"""scripts/site/preemption.py: the watch that requeues a Slurm run's preempted jobs. Here
its decisions, on squeue/scontrol answers as Slurm writes them; the live path (a job
preempted with PreemptMode=CANCEL, requeued, resumed) runs on the test cluster:
tests/slurm/test_slurm.py::test_job_preempted_by_cancel_is_requeued_and_resumes."""

from __future__ import annotations

import inspect
import subprocess
from types import SimpleNamespace

import pytest

from scripts.site import preemption
from scripts.site import snakemake_internals as internals


@pytest.mark.parametrize("min_job_age, seconds", [(None, 30), (300, 30), (600, 30), (60, 15), (2, 1), (0, 1)])
def test_the_queue_is_read_well_within_min_job_age(min_job_age, seconds):
    assert preemption.poll_seconds(min_job_age) == seconds


def test_squeue_lists_only_this_runs_preempted_jobs():
    assert preemption.squeue_command("8f2c") == [
        "squeue", "--noheader", "--states=PREEMPTED", "--name", "8f2c", "--format=%i|%k"]
    listed = "41|rule_train_wildcards_tiny_scratch_cnn_scratch_none_1.0_1-2\n\n42|rule_aggregate\n"
    assert preemption.preempted_jobs(listed) == [
        ("41", "rule_train_wildcards_tiny_scratch_cnn_scratch_none_1.0_1-2"), ("42", "rule_aggregate")]
    assert preemption.preempted_jobs("") == []


def test_requeue_outcome_names_the_job_and_what_to_do():
    level, message = preemption.requeue_outcome("41", "rule_train_x", 0, "")
    assert level == "info" and "Slurm job 41 (rule_train_x) was preempted" in message
    assert "resumes from its checkpoint" in message
    # Slurm requeued it itself meanwhile (PreemptMode=REQUEUE): nothing to say.
    assert preemption.requeue_outcome("41", "r", 1, "Job is pending execution for job 41\n") == ("", "")
    level, message = preemption.requeue_outcome("41", "r", 1, "Requested operation is presently disabled for job 41\n")
    assert level == "error"
    assert "`scontrol requeue 41` failed: Requested operation is presently disabled for job 41." in message
    assert "slurm-requeue: true" in message and "Ctrl-C" in message
    assert "exit status 1" in preemption.requeue_outcome("41", "r", 1, "")[1]


class Log:
    def __init__(self):
        self.lines = []

    def warning(self, message):
        self.lines.append(("warning", message))

    def error(self, message):
        self.lines.append(("error", message))


def answers(replies: dict):
    """A `subprocess.run` that answers each command from ``replies`` (keyed by its first
    two words) and records the commands."""
    calls = []

    def run(command, **_):
        calls.append(command)
        returncode, stdout, stderr = replies[tuple(command[:2])]
        return subprocess.CompletedProcess(command, returncode, stdout, stderr)

    return run, calls


def test_each_preempted_job_is_requeued_and_a_refusal_is_an_error():
    run, calls = answers({("squeue", "--noheader"): (0, "41|rule_train_a\n", ""),
                          ("scontrol", "requeue"): (0, "", "")})
    log = Log()
    assert preemption.requeue_preempted("run-1", log, run=run) == ["41"]
    assert calls[1] == ["scontrol", "requeue", "41"]
    assert [level for level, _ in log.lines] == ["warning"]

    run, _ = answers({("squeue", "--noheader"): (0, "41|rule_train_a\n", ""),
                      ("scontrol", "requeue"): (1, "", "Requested operation is presently disabled for job 41")})
    log = Log()
    assert preemption.requeue_preempted("run-1", log, run=run) == []
    assert [level for level, _ in log.lines] == ["error"]


def test_a_failed_squeue_is_a_warning_and_requeues_nothing():
    refusal = "slurm_load_jobs error: Unable to contact slurm controller"
    run, calls = answers({("squeue", "--noheader"): (1, "", refusal)})
    log = Log()
    assert preemption.requeue_preempted("run-1", log, run=run) == []
    assert len(calls) == 1 and "Unable to contact slurm controller" in log.lines[0][1]


def test_the_run_id_and_min_job_age_are_read_where_the_plugin_keeps_them():
    """On the installed Snakemake and plugin: the scheduler keeps its executor as
    ``_executor`` and the slurm executor names its jobs by ``run_uuid``."""
    from snakemake.scheduling.job_scheduler import JobScheduler
    from snakemake_executor_plugin_slurm import Executor
    from snakemake_executor_plugin_slurm.job_status_query import get_min_job_age, query_job_status_squeue

    assert "self._executor = executor_plugin.executor(" in inspect.getsource(JobScheduler.__init__)
    assert "self.run_uuid = " in inspect.getsource(Executor.__post_init__)
    assert "--name x" in query_job_status_squeue("x")  # the plugin finds its jobs by that name, too
    workflow = SimpleNamespace(scheduler=SimpleNamespace(_executor=SimpleNamespace(run_uuid="8f2c")))
    assert internals.slurm_run_id(workflow) == "8f2c"
    assert internals.slurm_min_job_age() == get_min_job_age()
