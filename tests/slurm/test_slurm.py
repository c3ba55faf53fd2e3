"""The workflow through a real Slurm cluster (tests/slurm/cluster.sh), not a mock."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import PROJECT, copy_dataset, snakemake, write_config

pytestmark = pytest.mark.skipif(
    os.environ.get("CXR_SLURM") != "1",
    reason="needs the test cluster: run as root through tests/run.sh (starts tests/slurm/cluster.sh)",
)
PROFILE = PROJECT / "tests" / "slurm" / "profile"


def slurm_snakemake(workdir: Path, config: Path, *args: str, profile: Path = PROFILE):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    command = ["timeout", "-s", "KILL", "900", sys.executable, "-m", "snakemake",
               "-s", str(PROJECT / "workflow/Snakefile"), "--directory", str(workdir),
               "--profile", str(profile), "--configfile", str(config), *args]
    started = time.time()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    print(f"snakemake through Slurm: {time.time() - started:.0f} s")
    return result


@pytest.fixture(scope="module")
def slurm_study(tmp_path_factory):
    work = tmp_path_factory.mktemp("slurm")
    data = copy_dataset(work / "data", {"train": 10, "test": 4})
    config = write_config(work / "c.yaml", data, models=["scratch_cnn"], strategies=["scratch"],
                          seeds=[1, 2], training={"image_size": 32, "batch_size": 8, "epochs": 1})
    # 2 threads for 1 allocated CPU: the job must use 1 (test_threads_follow_a_smaller_allocation)
    result = slurm_snakemake(work, config, "--set-threads", "train=2")
    assert result.returncode == 0, result.stderr[-5000:]
    return work, config, result


def test_training_jobs_ran_as_gpu_slurm_jobs(slurm_study):
    work, _, result = slurm_study
    for rule in ("verify", "split", "aggregate", "report"):  # on the login node, not submitted
        assert re.search(rf"^local(rule|checkpoint) {rule}:$", result.stderr, re.M)
    runs = pd.read_csv(work / "results/runs.csv", dtype=str)
    assert len(runs) == 2 and (runs["status"] == "ok").all()
    job_ids = set(runs["slurm_job_id"])
    assert all(j.isdigit() for j in job_ids) and len(job_ids) == 1  # both seeds in one pack job
    assert set(runs["cuda_visible_devices"]) == {"0"}  # the job was granted the (fake) GPU
    # trained on the CPU, as the config says (training.device: cpu: the GPU here is fake)
    devices = [json.loads(info.read_text())["device"] for info in work.glob("results/tiny/runs/**/train.json")]
    assert [(d["setting"], d["used"], d["granted"]["SLURM_GPUS_ON_NODE"]) for d in devices] == [("cpu", "cpu", "1")] * 2
    for job in job_ids:
        # scontrol still knows the finished job (MinJobAge): it asked for one GPU
        shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
        assert re.search(r"TresPerJob=gres[:/]gpu[:=]1", shown), shown
    html = (work / "results/report.html").read_text()
    for job in job_ids:
        assert f'class="l slurm-job">{job}<' in html


def test_threads_follow_a_smaller_allocation(slurm_study):
    """Snakemake passes --threads 2 and the job may run on both CPUs of this host (no
    binding), but Slurm allocated 1 CPU: TensorFlow must use 1 (SLURM_CPUS_PER_TASK).
    Fails with 2 when the thread count ignores the allocation."""
    work, _, _ = slurm_study
    for seed in (1, 2):
        run_dir = work / f"results/tiny/runs/scratch_cnn/scratch/none/frac1.0/seed{seed}"
        info = json.loads((run_dir / "train.json").read_text())
        assert slurm_job(info["environment"]["slurm_job_id"])["CPUs/Task"] == "1"
        assert len(os.sched_getaffinity(0)) >= 2 and info["threads"] == 1


def test_failed_job_is_reported_and_rerun_completes_only_what_is_missing(slurm_study):
    work, config, _ = slurm_study
    finished = work / "results/tiny/runs/scratch_cnn/scratch/none/frac1.0/seed1/train.json"
    before = finished.stat().st_mtime_ns
    broken_config = work / "broken.yaml"
    settings = json.loads(json.dumps(__import__("yaml").safe_load(config.read_text())))
    settings["seeds"] = [1, 2, 3]
    broken_config.write_text(__import__("yaml").safe_dump(settings))
    split3 = work / "results/tiny/splits/seed3.csv"
    split3.parent.mkdir(parents=True, exist_ok=True)
    split3.write_text("not,a,split\n")  # a corrupt input: the seed-3 training job must fail
    os.utime(split3, (time.time() + 60, time.time() + 60))
    result = slurm_snakemake(work, broken_config, "--rerun-triggers", "mtime")
    assert result.returncode != 0
    log = re.search(r"(\S+/slurm_logs/rule_train/\S+\.log)", result.stderr)
    assert log and Path(log[1]).exists(), result.stderr[-3000:]
    assert finished.stat().st_mtime_ns == before  # the finished run was not redone

    split3.unlink()
    result = slurm_snakemake(work, broken_config)
    assert result.returncode == 0, result.stderr[-4000:]
    assert finished.stat().st_mtime_ns == before
    assert (work / "results/tiny/runs/scratch_cnn/scratch/none/frac1.0/seed3/train.json").exists()


def study_train_jobs(workdir: Path) -> list[dict[str, str]]:
    """The train jobs Slurm still knows (MinJobAge) that ran in ``workdir``: this study's,
    not another's on the same cluster. (No slurmdbd here, so no sacct.)"""
    shown = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True, check=True,
                           timeout=30).stdout
    jobs = [dict(re.findall(r"(\S+?)=(\S*)", line)) for line in shown.splitlines()]
    return [job for job in jobs if "rule_train" in job.get("Comment", "")
            and Path(job.get("WorkDir", "/")).resolve() == workdir.resolve()]


def test_a_24_run_grid_is_4_pack_jobs_and_a_failed_seed_costs_only_its_own_rerun(tmp_path):
    """24 seeds of one configuration, 6 per job (the test profile's runs_per_job): 4 Slurm
    jobs. Seed 9's split is corrupt: its pack's other 5 runs finish and keep their files,
    the other packs finish; the rerun submits one job that trains seed 9 only, with a time
    limit from the measured runs instead of the estimate (1 min + 6 runs x 20 min)."""
    seeds = list(range(1, 25))
    data = copy_dataset(tmp_path / "data", {"train": 6, "test": 2})
    config = write_config(tmp_path / "c.yaml", data, models=["scratch_cnn"], strategies=["scratch"],
                          seeds=seeds, training={"image_size": 32, "batch_size": 8, "epochs": 1})
    snakemake(tmp_path, "--configfile", str(config), "--cores", "2", "--until", "split", "prepare_images")
    broken = tmp_path / "results/tiny/splits/seed9.csv"
    broken.write_text("not,a,split\n")
    os.utime(broken, (time.time() + 60, time.time() + 60))
    result = slurm_snakemake(tmp_path, config, "--rerun-triggers", "mtime", "--keep-going")
    assert result.returncode != 0
    (tmp_path / "first.log").write_text(result.stdout + result.stderr)
    first_jobs = study_train_jobs(tmp_path)
    assert len(first_jobs) == 4 and {job["TimeLimit"] for job in first_jobs} == {"02:01:00"}, first_jobs
    runs = {seed: tmp_path / f"results/tiny/runs/scratch_cnn/scratch/none/frac1.0/seed{seed}" for seed in seeds}
    assert [seed for seed in seeds if not (runs[seed] / "train.json").exists()] == [9]
    packs = tmp_path / "results/tiny/packs/scratch_cnn/scratch/none/frac1.0"
    assert sorted(p.name for p in packs.iterdir()) == ["seeds1-6.json", "seeds13-18.json", "seeds19-24.json"]
    siblings = {seed: (runs[seed] / "train.json").stat().st_mtime_ns for seed in (7, 8, 10, 11, 12)}
    assert all((runs[seed] / "model.weights.h5").exists() for seed in siblings)
    shown = study_status(tmp_path)
    assert shown[0] == "24 runs: 23 finished, 0 training, 0 queued, 1 failed, 0 waiting", shown
    assert "  results/tiny/runs/scratch_cnn/scratch/none/frac1.0/seed9: logs/tiny/scratch_cnn/scratch/none/frac1.0/" \
           "seed9/train.log" in shown

    broken.unlink()  # the split rule writes it again
    result = slurm_snakemake(tmp_path, config)
    assert result.returncode == 0, result.stderr[-4000:]
    new_jobs = [job for job in study_train_jobs(tmp_path) if job["JobId"] not in {j["JobId"] for j in first_jobs}]
    # 1 min start + one run: 1.5x the longest measured run (the finished.json records), not run_minutes
    longest = max(json.loads((runs[seed] / "finished.json").read_text())["wall_seconds"]
                  for seed in seeds if seed != 9)
    minutes = math.ceil(1 + max(1.0, 1.5 * longest / 60))
    assert len(new_jobs) == 1 and new_jobs[0]["TimeLimit"] == f"00:{minutes:02d}:00" and minutes < 20, new_jobs
    assert {seed: (runs[seed] / "train.json").stat().st_mtime_ns for seed in siblings} == siblings
    retrained = json.loads((runs[9] / "train.json").read_text())
    assert retrained["environment"]["slurm_job_id"] == new_jobs[0]["JobId"]
    log = (tmp_path / "logs/tiny/scratch_cnn/scratch/none/frac1.0/seeds7-12/train.log").read_text()
    assert all(f"seed {seed}: finished earlier" in log for seed in siblings)
    table = pd.read_csv(tmp_path / "results/runs.csv")
    assert len(table) == 24 and (table["status"] == "ok").all()


def start_until_checkpoint(tmp_path: Path, epochs: int, profile: Path = PROFILE):
    """A one-run study (scratch CNN, a checkpoint every epoch) started through the test
    profile, returned once its train job has checkpointed epoch 1: ``(snakemake process,
    config, run folder, checkpoint state file, train job id)``."""
    data = copy_dataset(tmp_path / "data", {"train": 16, "test": 4})
    config = write_config(tmp_path / "c.yaml", data, models=["scratch_cnn"], strategies=["scratch"],
                          training={"image_size": 32, "batch_size": 16, "epochs": epochs,
                                    "early_stopping_patience": 0, "checkpoint_seconds": 0})
    run_dir = tmp_path / "results/tiny/runs/scratch_cnn/scratch/none/frac1.0/seed1"
    state = run_dir / "checkpoint" / "state.json"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    workflow = subprocess.Popen(
        ["timeout", "-s", "KILL", "900", sys.executable, "-m", "snakemake", "-s",
         str(PROJECT / "workflow/Snakefile"), "--directory", str(tmp_path), "--profile", str(profile),
         "--configfile", str(config)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while not (state.exists() and json.loads(state.read_text())["epoch"] >= 1):
        assert time.time() < deadline and workflow.poll() is None, "no checkpoint appeared"
        time.sleep(0.05)
    # This study's train job: another study on the cluster (a second suite, a user) may have one too.
    jobs = subprocess.run(["squeue", "-h", "-o", "%i|%k|%Z"], capture_output=True, text=True).stdout
    job = next(job_id for job_id, comment, workdir in (line.split("|", 2) for line in jobs.splitlines())
               if "rule_train" in comment and Path(workdir).resolve() == tmp_path.resolve())
    return workflow, config, run_dir, state, job


def test_cancelled_slurm_job_resumes_from_its_checkpoint(tmp_path):
    """scancel (SIGTERM, then SIGKILL: what a time limit or preemption does) after >= 1
    epoch; the rerun submits a new job that continues from the checkpoint."""
    epochs = 40
    workflow, config, run_dir, state, cancelled = start_until_checkpoint(tmp_path, epochs)
    subprocess.run(["scancel", cancelled], check=True)
    output = workflow.communicate(timeout=600)[0]
    assert workflow.returncode != 0, output[-2000:]
    killed_at = json.loads(state.read_text())["epoch"]
    assert 1 <= killed_at < epochs and not (run_dir / "train.json").exists()

    result = slurm_snakemake(tmp_path, config)
    assert result.returncode == 0, result.stderr[-4000:]
    info = json.loads((run_dir / "train.json").read_text())
    assert info["resumed_from_epoch"] >= killed_at and info["epochs_run"] == epochs
    assert info["environment"]["slurm_job_id"] not in ("", None, cancelled)  # a new Slurm job


def test_a_failed_attempt_is_resubmitted_with_more_memory_and_time(tmp_path):
    """With retries, attempt 2 asks Slurm for 2x memory and 2x time ("3000 * attempt";
    1 min start + 20 min run_minutes, times the attempt, in the test profile, like the
    shipped one's): the split file is corrupt, so both attempts fail, and both submissions
    are read back from scontrol. Attempt 2 does not train: a corrupt file is no failure
    a retry can fix."""
    data = copy_dataset(tmp_path / "data", {"train": 6, "test": 2})
    config = write_config(tmp_path / "c.yaml", data, models=["scratch_cnn"], strategies=["scratch"],
                          training={"image_size": 32, "batch_size": 8, "epochs": 1})
    snakemake(tmp_path, "--configfile", str(config), "--cores", "1", "--until", "split", "prepare_images")
    split = tmp_path / "results/tiny/splits/seed1.csv"
    split.write_text("not,a,split\n")
    os.utime(split, (time.time() + 60, time.time() + 60))
    result = slurm_snakemake(tmp_path, config, "--retries", "1", "--rerun-triggers", "mtime")
    assert result.returncode != 0
    logs = sorted((tmp_path / ".snakemake/slurm_logs/rule_train").rglob("*.log"), key=lambda p: int(p.stem))
    jobs = [slurm_job(log.stem) for log in logs]
    assert [(j["TimeLimit"], re.search(r"mem=(\w+)", j["TRES"])[1]) for j in jobs] == [
        ("00:21:00", "3000M"), ("00:42:00", "6000M")]
    # A corrupt split fails every attempt alike: attempt 2 reads attempt 1's record and stops at once
    attempts = (tmp_path / "logs/tiny/scratch_cnn/scratch/none/frac1.0/seeds1-1/attempts.log").read_text()
    first, retry = re.split(r"^== attempt 2 .*$", attempts, flags=re.M)
    assert "ERROR: not retried: attempt 1 of this pack failed in a way no retry can fix (seed 1: KeyError" in retry
    assert "seed 1 failed" not in retry and "seed 1 failed" in first


# --- the shipped profile, as a new user runs it ----------------------------------------

def checkout_copy(target: Path) -> Path:
    """This checkout's files (tracked and new, not ignored) as a user's clone would have them."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=PROJECT,
                            capture_output=True, text=True, check=True, timeout=60).stdout
    for name in filter(None, listed.split("\0")):
        source = PROJECT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def edit_site_values(profile: Path) -> None:
    """What a user of the test cluster edits in profiles/slurm/config.yaml: no accounts
    here (delete the line), its one partition, squeue for status (no slurmdbd). The last
    line only makes the first status poll come after 2 s instead of 40 s."""
    text = profile.read_text()
    edits = {'  slurm_account: "your_account"\n': "",
             'slurm_partition: "cpu"': 'slurm_partition: "gpu"',
             "# slurm-status-command: squeue": "slurm-status-command: squeue"}
    for old, new in edits.items():
        assert text.count(old) == 1, old  # the shipped profile still reads as the README says
        text = text.replace(old, new)
    profile.write_text(text + "slurm-init-seconds-before-status-checks: 2\n")


def slurm_job(job_id: str) -> dict[str, str]:
    shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True,
                           check=True, timeout=30).stdout
    return dict(re.findall(r"(\S+?)=(\S*)", shown))


@pytest.fixture(scope="module")
def shipped_profile_run(tmp_path_factory):
    """`make profile`, then literally `snakemake --profile slurm` from the root of a copy of
    the checkout whose profile and config the user edited (1 model, 1 seed, 1 epoch)."""
    node = subprocess.run(["scontrol", "-o", "show", "node"], capture_output=True, text=True,
                          check=True, timeout=30).stdout
    cpus, memory = (int(re.search(rf" {key}=(\d+)", node)[1]) for key in ("CPUTot", "RealMemory"))
    # A cluster started by an older cluster.sh has this machine's size: the 8-CPU job would pend.
    assert cpus >= 8 and memory >= 12000, "restart it: tests/slurm/cluster.sh stop && ... start"
    root = tmp_path_factory.mktemp("user")
    clone = checkout_copy(root / "cxr-transfer")
    edit_site_values(clone / "profiles/slurm/config.yaml")
    data = copy_dataset(root / "data", {"train": 8, "test": 3})
    write_config(clone / "config/config.yaml", data, models=["scratch_cnn"], strategies=["scratch"],
                 seeds=[1], training={"image_size": 32, "batch_size": 8, "epochs": 1})
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "HOME": str(root / "home"), "XDG_CONFIG_HOME": str(root / "home/.config"), "PWD": str(clone)}
    linked = subprocess.run(["make", "profile"], cwd=clone, env=env, capture_output=True, text=True,
                            timeout=60)
    assert linked.returncode == 0 and (root / "home/.config/snakemake/slurm").is_symlink(), linked.stderr
    started = time.time()
    result = subprocess.run(["snakemake", "--profile", "slurm"], cwd=clone, env=env, capture_output=True,
                            text=True, timeout=900)
    print(f"snakemake --profile slurm: {time.time() - started:.0f} s")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return clone, result


def test_literal_profile_name_submits_right_sized_gpu_training(shipped_profile_run):
    """The train job asked Slurm for 8 CPUs (one task), 1 GPU and 12 GB: fails with
    CPUs/Task=1 if default-resources' cpus_per_task reaches train again. The steps the
    profile sizes are cluster jobs; plan and split stay on the login node."""
    clone, result = shipped_profile_run
    output = result.stdout + result.stderr
    assert "Using profile slurm for setting default command line arguments" in result.stderr
    for rule in ("plan", "split"):  # on the login node
        assert f"localrule {rule}:" in output
    for rule in ("verify", "leakage", "thumbnails", "aggregate", "report"):  # submitted
        assert re.search(rf"^(rule|checkpoint) {rule}:$", output, re.M)
        assert not re.search(rf"^local(rule|checkpoint) {rule}:$", output, re.M)
    info = json.loads((clone / "results/tiny/runs/scratch_cnn/scratch/none/frac1.0/seed1/train.json").read_text())
    job = slurm_job(info["environment"]["slurm_job_id"])
    assert job["NumCPUs"] == "8" and job["CPUs/Task"] == "8" and job["NumTasks"] == "1"
    assert re.fullmatch(r"gres[:/]gpu[:=]1", job["TresPerJob"]), job["TresPerJob"]
    assert job["MinMemoryNode"] == "12000M" and job["Partition"] == "gpu"
    assert job["Requeue"] == "1"  # slurm-requeue: true


def test_training_threads_come_from_the_allocation(shipped_profile_run):
    """train.json's threads = min(Slurm's CPUs per task, the CPUs the job may run on,
    Snakemake's --threads 8). 8 allocated, but this host has fewer real CPUs and nothing
    binds (task/none): the affinity mask is the limit here (Snakemake's `--cores all` in
    the job caps the threads at it too). A smaller allocation: test_threads_follow_a_smaller_allocation."""
    clone, _ = shipped_profile_run
    info = json.loads((clone / "results/tiny/runs/scratch_cnn/scratch/none/frac1.0/seed1/train.json").read_text())
    allocated = int(slurm_job(info["environment"]["slurm_job_id"])["CPUs/Task"])
    assert info["threads"] == min(allocated, len(os.sched_getaffinity(0)), 8)


def test_unknown_partition_stops_the_run_before_any_job(tmp_path):
    """The shipped profile with only the account line deleted: its CPU partition 'cpu' does
    not exist here. Fails if partitions are not checked against sinfo up front."""
    clone = checkout_copy(tmp_path / "cxr-transfer")
    profile = clone / "profiles/slurm/config.yaml"
    profile.write_text(profile.read_text().replace('  slurm_account: "your_account"\n', ""))
    data = copy_dataset(tmp_path / "data", {"train": 2, "test": 1})
    write_config(clone / "config/config.yaml", data, models=["scratch_cnn"], strategies=["scratch"])
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PWD": str(clone)}
    result = subprocess.run(["snakemake", "--profile", "profiles/slurm"], cwd=clone, env=env,
                            capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert ("default-resources.slurm_partition: partition 'cpu' does not exist on this cluster "
            "(sinfo lists: gpu, preemptible, short, urgent)") in output
    assert "placeholder" not in output and "set-resources.train.slurm_partition" not in output
    assert not (clone / "results/tiny").exists()  # verify, the first step, did not run


def test_requeued_training_job_resumes_in_the_same_slurm_job(tmp_path):
    """`scontrol requeue` (what preemption with requeue does) after >= 1 epoch: Slurm
    restarts the same job, which resumes from its checkpoint and finishes every epoch
    while Snakemake keeps waiting and exits 0."""
    epochs = 40
    started = time.time()
    workflow, _, run_dir, state, requeued = start_until_checkpoint(tmp_path, epochs)
    # Read before the requeue: a lower bound of the epoch the old process reaches, however
    # late the requeue lands or however soon the restarted job checkpoints again.
    at_requeue = json.loads(state.read_text())["epoch"]
    subprocess.run(["scontrol", "requeue", requeued], check=True, timeout=30)
    output = workflow.communicate(timeout=600)[0]
    print(f"requeue test: {time.time() - started:.0f} s; requeued at epoch {at_requeue}")
    assert workflow.returncode == 0, output[-4000:]
    assert 1 <= at_requeue < epochs
    info = json.loads((run_dir / "train.json").read_text())
    assert info["environment"]["slurm_job_id"] == requeued  # the same job, restarted by Slurm
    assert slurm_job(requeued)["Restarts"] == "1"
    assert info["resumed_from_epoch"] >= at_requeue and info["epochs_run"] == epochs
    history = pd.read_csv(run_dir / "history.csv")
    assert history["epoch"].tolist() == list(range(1, epochs + 1))  # none lost or repeated


def test_job_preempted_by_cancel_is_requeued_and_resumes(tmp_path):
    """The pack trains in partition preemptible (PreemptMode=CANCEL); after >= 1 epoch a
    job in partition urgent (higher PriorityTier) asks for the node's one GPU. Slurm
    cancels the pack (state PREEMPTED: the plugin alone would wait for it for ever); the
    workflow's watch requeues it, the same job restarts, resumes from its checkpoint and
    finishes every epoch, and Snakemake exits 0."""
    epochs = 40
    started = time.time()
    profile = tmp_path / "profile"
    profile.mkdir()
    shipped = (PROFILE / "config.yaml").read_text()
    assert shipped.count("  train:\n") == 1
    (profile / "config.yaml").write_text(shipped.replace("  train:\n", "  train:\n    slurm_partition: preemptible\n"))
    workflow, _, run_dir, state, preempted = start_until_checkpoint(tmp_path, epochs, profile)
    at_preemption = json.loads(state.read_text())["epoch"]  # a lower bound, as in the requeue test
    urgent = subprocess.run(["sbatch", "--parsable", "-p", "urgent", "--gpus=1", "-t", "5", "-D", str(tmp_path),
                             "-o", "/dev/null", "--wrap", "sleep 5"], capture_output=True, text=True, check=True,
                            timeout=60).stdout.strip()
    try:
        output = workflow.communicate(timeout=600)[0]
    finally:
        subprocess.run(["scancel", urgent], timeout=60)
    print(f"preemption test: {time.time() - started:.0f} s; preempted at epoch >= {at_preemption}")
    assert workflow.returncode == 0, output[-4000:]
    assert f"Slurm job {preempted} (rule_train" in output and "was preempted and cancelled" in output
    assert slurm_job(urgent)["JobState"] == "COMPLETED"  # it ran: the GPU was freed for it
    assert 1 <= at_preemption < epochs
    info = json.loads((run_dir / "train.json").read_text())
    assert info["environment"]["slurm_job_id"] == preempted  # the same job, requeued
    assert slurm_job(preempted)["Restarts"] == "1"
    assert info["resumed_from_epoch"] >= at_preemption and info["epochs_run"] == epochs
    history = pd.read_csv(run_dir / "history.csv")
    assert history["epoch"].tolist() == list(range(1, epochs + 1))


# --- the pre-flight: Slurm is asked before anything is submitted ----------------------

def queued_in(workdir: Path) -> list[str]:
    """The jobs Slurm knows (queued, running or recently ended) that run in ``workdir``."""
    listed = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i|%Z"], capture_output=True, text=True,
                            check=True, timeout=30).stdout
    return [job for job, folder in (line.split("|", 1) for line in listed.splitlines())
            if Path(folder).resolve() == workdir.resolve()]


def test_preflight_stops_a_study_that_slurm_would_never_run(tmp_path):
    """The cluster's partition `short` has MaxTime 5 min, and `sbatch --test-only` accepts
    a longer job there (EnforcePartLimits=NO: it would pend for ever): the pre-flight
    compares the limits itself. More memory than the node has: Slurm's own refusal is
    quoted. Either way the summary is printed, the run stops before its first job
    (local ones included) and the queue holds nothing of it."""
    data = copy_dataset(tmp_path / "data", {"train": 2, "test": 1})
    config = write_config(tmp_path / "c.yaml", data, models=["scratch_cnn"], strategies=["scratch"],
                          seeds=[1, 2], training={"image_size": 32, "batch_size": 8, "epochs": 1})
    profile = tmp_path / "profile"
    profile.mkdir()
    shipped = (PROFILE / "config.yaml").read_text()
    assert shipped.count("  train:\n") == 1
    (profile / "config.yaml").write_text(shipped.replace("  train:\n", "  train:\n    slurm_partition: short\n"))
    result = slurm_snakemake(tmp_path, config, profile=profile)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    # the 2 runs are one pack; prepare_images is the CPU job
    assert "Slurm pre-flight: jobs to submit: 1 GPU, 1 CPU;" in output
    # 1 min + 2 runs x 20 min (the test profile's run_minutes): 41 min; retries: 0
    assert "GPU-hours requested (time limit x GPUs): 0.7 at attempt 1" in output
    assert ("asks for 41 min at attempt 1, more than partition short's MaxTime (5 min): Slurm would keep "
            "it pending for ever. Set set-resources.train.max_runtime to at most 5") in output
    assert "set-resources.train.slurm_partition" in output and "nothing was submitted" in output
    assert str(profile / "config.yaml") in output

    (profile / "config.yaml").write_text(shipped.replace('"3000 * attempt"', "999999"))
    result = slurm_snakemake(tmp_path, config, profile=profile)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert re.search(r"sbatch --test-only refuses the train job \S+ \(attempt 1\): "
                     r"allocation failure: Requested node configuration is not available \[sbatch .* --mem 999999 ",
                     output), output[-3000:]
    assert queued_in(tmp_path) == [] and not (tmp_path / "results/tiny").exists()


def study_status(workdir: Path) -> list[str]:
    """`python -m scripts status` as a user types it in the study's directory."""
    shown = subprocess.run([sys.executable, "-m", "scripts", "status"], cwd=workdir, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(PROJECT)}, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    return shown.stdout.splitlines()


def test_status_shows_why_a_train_job_pends(tmp_path):
    """A train job of the study that Slurm keeps pending (more time than partition short
    allows): `python -m scripts status` counts its runs as queued and quotes Slurm's
    reason."""
    data = copy_dataset(tmp_path / "data", {"train": 2, "test": 1})
    config = write_config(tmp_path / "c.yaml", data, models=["scratch_cnn"], strategies=["scratch"],
                          seeds=[1, 2, 3])
    snakemake(tmp_path, "--configfile", str(config), "--cores", "1", "results/plan.json")
    comment = "rule_train_wildcards_tiny_scratch_cnn_scratch_none_1.0_1-2"  # as the executor names a pack job
    job = subprocess.run(["sbatch", "--parsable", "-p", "short", "-t", "60", "--comment", comment, "-D",
                          str(tmp_path), "-o", "/dev/null", "--wrap", "true"], capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    try:
        deadline = time.time() + 60
        while slurm_job(job)["Reason"] != "PartitionTimeLimit":
            assert time.time() < deadline, slurm_job(job)
            time.sleep(1)
        shown = study_status(tmp_path)
    finally:
        subprocess.run(["scancel", job], timeout=60)
    assert shown[0] == "3 runs: 0 finished, 0 training, 2 queued, 0 failed, 1 waiting", shown
    assert shown[1:3] == ["1 train jobs pending, by Slurm's reason:", f"  PartitionTimeLimit: 1 (jobs {job})"]
