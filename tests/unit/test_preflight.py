"""scripts/site/preflight.py: Slurm's limits read as Slurm writes them, and the jobs
compared with them. The live path (scontrol, sbatch --test-only) runs on the test
cluster: tests/slurm/test_slurm.py::test_preflight_stops_a_study_that_slurm_would_never_run.
The QOS path is tested here only: the test cluster has no accounting (no sacctmgr)."""

from __future__ import annotations

import pytest

from scripts.site import preflight
from scripts.site.preflight import PlannedJob

# `scontrol -o show partition` of the test cluster (tests/slurm/cluster.sh), shortened.
PARTITIONS = (
    "PartitionName=gpu AllowGroups=ALL Default=YES QoS=N/A DefaultTime=NONE MaxTime=UNLIMITED Nodes=vm\n"
    "PartitionName=short AllowGroups=ALL Default=NO QoS=gpu_short DefaultTime=NONE MaxTime=00:05:00 Nodes=vm\n")


@pytest.mark.parametrize("text, minutes", [
    ("UNLIMITED", None), ("INFINITE", None), ("", None), ("2-00:00:00", 2880), ("1-12", 2160), ("1-00:30", 1470),
    ("00:05:00", 5), ("90", 90), ("30:30", 30.5), ("12:00:00", 720)])
def test_slurm_times_in_minutes(text, minutes):
    assert preflight.slurm_minutes(text) == minutes


def test_partitions_and_qos_as_slurm_lists_them():
    partitions, default = preflight.parse_partitions(PARTITIONS)
    assert default == "gpu" and partitions["short"]["MaxTime"] == "00:05:00"
    assert preflight.parse_qos("normal|\ngpu_short|04:00:00\nlong|7-00:00:00\n") == {
        "normal": None, "gpu_short": 240, "long": 10080}


def job(rule: str, minutes: list[float], **resources) -> PlannedJob:
    return PlannedJob(rule, f"{rule}_x", [{"runtime": m, **resources} for m in minutes])


def test_a_limit_above_maxtime_or_maxwall_names_the_key_to_change():
    partitions, default = preflight.parse_partitions(PARTITIONS)
    profile = {"set-resources.train.slurm_partition": "short", "set-resources.aggregate.runtime": "120 * attempt"}
    jobs = [job("train", [4, 5, 6], slurm_partition="short", gpu=1),  # attempt 3 exceeds MaxTime
            job("aggregate", [120, 240]),                              # the default partition: no limit
            job("report", [30], qos="fast")]
    problems = preflight.time_limit_problems(jobs, partitions, default, {"fast": 20, "gpu_short": 300}, profile)
    assert problems == [
        "train job train_x asks for 6 min at attempt 3, more than partition short's MaxTime (5 min): Slurm would "
        "keep it pending for ever. Set set-resources.train.max_runtime to at most 5, or choose another partition "
        "(set-resources.train.slurm_partition).",
        "report job report_x asks for 30 min at attempt 1, more than QOS fast's MaxWall (20 min): Slurm would keep "
        "it pending for ever. Set default-resources.runtime to at most 20, or choose another partition "
        "(default-resources.slurm_partition)."]
    # the partition's own QOS applies where the job names none; without accounting no QOS is known
    assert "QOS gpu_short's MaxWall (4 min)" in preflight.time_limit_problems(
        [job("train", [5], slurm_partition="short")], partitions, default, {"gpu_short": 4}, profile)[0]
    assert preflight.time_limit_problems(jobs[2:], partitions, default, None, profile) == []


def test_gpu_hours_count_every_attempt_at_worst():
    jobs = [job("train", [60, 120, 180], gpu=1), job("train", [30, 60, 90], gres="gpu:a100:2"),
            job("verify", [60, 120, 180])]
    assert [j.gpus for j in jobs] == [1, 2, 0]
    assert preflight.gpu_hours(jobs, 1) == 1 + 2 * 0.5
    assert preflight.gpu_hours(jobs, 3) == 6 + 2 * 3
    lines = preflight.summary(jobs, login_jobs=7, retries=2, disk={"run files": 2.5e9})
    assert lines[0] == "Slurm pre-flight: jobs to submit: 2 GPU, 1 CPU; 7 run on this node"
    assert "2.0 at attempt 1; at worst, every job failing its 3 attempts: 12" in lines[1]
    assert "run files 2.5 GB" in lines[2]


def test_disk_counts_every_saved_model_and_the_checkpoints_training_at_once():
    runs = [{"model": "a"}] * 3 + [{"model": "b"}]
    disk = preflight.disk_bytes(runs, {"a": 10, "b": 100}, weights_bytes=7, runs_at_once_total=2)
    assert disk == {"run files": 4 * (3 * 10 + 100), "checkpoints": 4 * 4 * (100 + 10), "weights": 7}


def test_a_test_submission_is_the_executor_command_and_judged_by_its_shape():
    command = ("sbatch --parsable --job-name abc --output /x/%j.log --export=ALL --comment rule_train_w "
               "-p gpu -t 41 --mem 3000 --cpus-per-task=1 -D /w --gpus=1")
    assert preflight.test_only_command(command).startswith("sbatch --test-only --job-name abc")
    assert preflight.test_only_command(command).endswith("--gpus=1 --wrap=true")
    other = command.replace("abc", "def").replace("rule_train_w", "rule_train_v")
    assert preflight.shape(command) == preflight.shape(other) != preflight.shape(command.replace("-t 41", "-t 82"))
