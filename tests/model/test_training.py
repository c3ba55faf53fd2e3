"""Training jobs as the workflow runs them: determinism, resume after a kill that
gives the same model as an uninterrupted run, the feature cache, early stopping."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import (
    PROJECT,
    copy_dataset,
    lab_backbone_file,
    lab_network,
    random_notop_file,
    snakemake,
    validated,
    write_config,
)

from scripts.common.layout import RUN_FILES
from scripts.train.objective import weighted_scores
from scripts.train.probe import feature_cache_path
from scripts.train.training import end_to_end_phases, phases

TINY = {"image_size": 32, "batch_size": 16, "epochs": 2, "warmup_epochs": 1,
        "learning_rate": 1e-3, "finetune_learning_rate": 1e-4, "partial_stages": 1,
        "early_stopping_patience": 0, "checkpoint_seconds": 0}


def test_phases_that_train_through_the_backbone():
    assert [p.trainable for p in phases("full")] == ["backbone"]
    assert [p.learning_rate_key for p in phases("partial")] == ["finetune_learning_rate"]
    assert [p.trainable for p in phases("scratch")] == ["all"]
    assert phases("frozen") == phases("linear_probe") == []
    # frozen without the feature cache trains its head through the frozen backbone
    assert [p.trainable for p in end_to_end_phases("frozen", {"frozen_feature_cache": False})] == ["head"]
    assert end_to_end_phases("frozen", {"frozen_feature_cache": True}) == []


def test_feature_cache_is_keyed_by_what_draws_the_features(tmp_path):
    """Random init: the seed draws the backbone, so it keys the file; a weights file's hash
    replaces the seed; the model and the precision key it too."""
    images = tmp_path / "images_32px.npy"
    np.save(images, np.zeros((2, 32, 32, 3), np.uint8))

    def path(model="vgg16", seed=1, precision="none", sha256=None):
        return feature_cache_path(tmp_path / "cache", images, model, seed, precision, sha256)

    assert path().parent == tmp_path / "cache" and path().name.startswith("vgg16-images_32px-")
    assert path() == path() != path(seed=2)
    assert path(sha256="ab", seed=1) == path(sha256="ab", seed=2) != path(sha256="cd")
    assert path() != path(model="resnet50") and path() != path(precision="bfloat16")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Verified, decoded and split data for direct `python -m scripts train` calls."""
    work = tmp_path_factory.mktemp("prepared")
    data = copy_dataset(work / "data", {"train": 12, "test": 4})
    config = write_config(work / "c.yaml", data, models=["scratch_cnn"], strategies=["scratch"],
                          seeds=[1, 2], training=TINY)
    snakemake(work, "--configfile", str(config), "--cores", "2", "--until", "split", "prepare_images")
    return work


def settings(training: dict, weights: dict | None = None, backbone_file: dict | None = None) -> dict:
    """A run's settings as the workflow passes them (schema defaults filled in)."""
    config = validated({"datasets": {"tiny": {"path": ".", "manifest": "m"}}, "models": ["scratch_cnn"],
                        "strategies": ["scratch"], "seeds": [1], "training": training})
    declared = {"backbone_file": backbone_file} if backbone_file else {}
    return {"training": {**config["training"], "partial_stages": training.get("partial_stages", 1)},
            "weights": weights or {"source": "none"}, "positive_class": None, "evaluation": config["evaluation"],
            "gradcam": config["gradcam"], **declared}


def train(work: Path, folder: str, seed: int, training: dict, model: str = "scratch_cnn",
          strategy: str = "scratch", split_seed: int | None = None, weights: dict | None = None,
          environ: dict | None = None, backbone_file: dict | None = None) -> Path:
    """One training run of the prepared data into ``work/folder``; ``environ``: variables
    added to the job's environment."""
    run_dir = work / folder
    command = [sys.executable, "-m", "scripts", "train", "--dataset", "tiny", "--model", model,
               "--strategy", strategy, "--weights-name", "none", "--fraction", "1.0", "--seed", str(seed),
               "--images", str(work / "results/tiny/data/images_32px.npy"),
               "--split", str(work / f"results/tiny/splits/seed{split_seed or seed}.csv"),
               "--settings", json.dumps(settings(training, weights, backbone_file)),
               "--checkpoint", str(run_dir / "checkpoint"),
               "--feature-cache", str(work / "cache"), "--threads", "1",
               "--outputs", json.dumps({name: str(run_dir / file) for name, file in RUN_FILES.items()})]
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(PROJECT), **(environ or {})},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def test_same_seed_same_model_other_seed_differs_on_the_same_split(prepared):
    first, again, other = (train(prepared, folder, seed, TINY, split_seed=1)
                           for folder, seed in (("a", 1), ("b", 1), ("c", 2)))
    metrics = [json.loads((d / "metrics.json").read_text())["test"] for d in (first, again)]
    assert metrics[0] == metrics[1]
    predictions = [(d / "predictions.csv").read_text() for d in (first, again, other)]
    assert predictions[0] == predictions[1]  # bit-identical probabilities
    assert predictions[2] != predictions[0]  # only the seed differs: same split file


SLURM_GPU_JOB = {"SLURM_GPUS_ON_NODE": "1", "SLURM_JOB_GPUS": "0", "CUDA_VISIBLE_DEVICES": "0"}


def test_a_job_granted_a_gpu_trains_on_the_cpu_when_told_to(prepared):
    """A Slurm ``--gpus=1`` job's variables with this CPU-only TensorFlow: ``device: cpu``
    trains (``auto`` stops: tests/unit/test_runtime.py) and train.json says why."""
    run_dir = train(prepared, "cpu", 1, {**TINY, "device": "cpu"}, environ=SLURM_GPU_JOB)
    info = json.loads((run_dir / "train.json").read_text())
    assert (info["device"]["setting"], info["device"]["used"], info["devices"]) == ("cpu", "cpu", ["CPU"])
    assert info["device"]["granted"] == SLURM_GPU_JOB and info["settings"]["device"] == "cpu"


@pytest.mark.parametrize("runs_at_once", [1, 2])
def test_a_pack_granted_a_gpu_it_cannot_use_stops_before_training(prepared, runs_at_once):
    """The same job with ``device: auto``: the pack stops at its first run with the
    device's message (the job's problem, not one seed's), and no run trains."""
    folder = f"no-gpu-{runs_at_once}"
    stopped = train_pack(prepared, folder, [1, 2], TINY, runs_at_once=runs_at_once, environ=SLURM_GPU_JOB)
    assert stopped.returncode == 1
    assert stopped.stderr.count("ERROR: this job was granted a GPU (SLURM_GPUS_ON_NODE=1") == 1, stopped.stderr
    assert "TensorFlow sees none" in stopped.stderr and "failed (see their logs)" not in stopped.stderr
    assert not list((prepared / folder).glob("seed*/train.json"))


def parent_pid(pid: int) -> int:
    # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ")"
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def training_pid(workflow_pid: int) -> int | None:
    """The `python -m scripts train(-pack)` process that the Snakemake process ``workflow_pid``
    started (not another study's train job: the suite may run beside one)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            if b"scripts" not in cmdline or not {b"train", b"train-pack"} & set(cmdline):
                continue
            ancestor = int(proc.name)
            while ancestor > 1 and ancestor != workflow_pid:
                ancestor = parent_pid(ancestor)
        except (OSError, ValueError, IndexError):
            continue  # the process ended while it was looked at
        if ancestor == workflow_pid:
            return int(proc.name)
    return None


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_training_resumes_to_the_same_model(tmp_path, signal_number):
    data = copy_dataset(tmp_path / "data", {"train": 16, "test": 4})
    # Many epochs after the one the kill waits for: a loaded machine may delay the kill by
    # seconds, and the run must still be mid-training when it lands.
    epochs = 30
    config = write_config(tmp_path / "c.yaml", data, models=["scratch_cnn"], strategies=["scratch"],
                          training={**TINY, "epochs": epochs})
    run_dir = tmp_path / "results/tiny/runs/scratch_cnn/scratch/none/frac1.0/seed1"
    command = [sys.executable, "-m", "snakemake", "-s", str(PROJECT / "workflow/Snakefile"),
               "--directory", str(tmp_path), "--configfile", str(config), "--cores", "1",
               "--show-failed-logs"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    workflow = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    state = run_dir / "checkpoint" / "state.json"
    deadline = time.time() + 300
    while not (state.exists() and json.loads(state.read_text())["epoch"] >= 2):
        assert time.time() < deadline and workflow.poll() is None, "no checkpoint appeared"
        time.sleep(0.05)
    pid = training_pid(workflow.pid)
    assert pid is not None, "the training process was not found"
    os.kill(pid, signal_number)
    output = workflow.communicate(timeout=120)[0].decode()
    assert workflow.returncode != 0, output[-2000:]
    killed_at = json.loads(state.read_text())["epoch"]
    assert 2 <= killed_at < epochs
    assert not (run_dir / "train.json").exists() and not (run_dir / "model.weights.h5").exists()

    snakemake(tmp_path, "--configfile", str(config), "--cores", "1")
    info = json.loads((run_dir / "train.json").read_text())
    assert info["resumed_from_epoch"] >= killed_at and info["epochs_run"] == epochs
    log = (tmp_path / "logs/tiny/scratch_cnn/scratch/none/frac1.0/seed1/train.log").read_text()
    assert f"resuming from checkpoint after epoch {info['resumed_from_epoch']}" in log
    assert not (run_dir / "checkpoint").exists()
    uninterrupted = train(tmp_path, "uninterrupted", 1, {**TINY, "epochs": epochs})
    assert (run_dir / "predictions.csv").read_text() == (uninterrupted / "predictions.csv").read_text()


def test_a_keras_file_backbone_trains_frozen_partial_and_full_and_explains_with_its_derived_layer(prepared):
    """A user's .keras network declared as a backbone trains through the train step under
    each pretrained strategy from its own weights, its SHA256 recorded as the weights'
    (what the report names it by) and its Grad-CAM maps finite and non-negative at the
    stage output derived from its network. A swapped file stops the job before training.
    Measured on the shared 2-core VM (load ~2): 33 s, plus 4 s of the module fixture."""
    declaration = lab_backbone_file(prepared / "lab.keras", lab_network(32))
    weights = {"source": "backbone_file", "path": declaration["path"], "sha256": declaration["sha256"]}
    share = {}
    for strategy in ("frozen", "partial", "full"):
        run_dir = train(prepared, f"lab-{strategy}", 1, TINY, "lab", strategy, weights=weights,
                        backbone_file=declaration)
        info = json.loads((run_dir / "train.json").read_text())
        assert info["weights"]["sha256"] == declaration["sha256"] and info["model"] == "lab"
        share[strategy] = info["backbone_trainable_share"]
        cams = np.load(run_dir / "gradcam.npz")["cams"].astype(float)
        assert cams.shape[1:] == (8, 8)  # lab2_relu, the deepest stage output of >= 7 cells at 32 px
        assert np.isfinite(cams).all() and cams.min() >= 0
    # partial: the top stage (lab4_conv); full: all but the BatchNorm statistics and scales
    assert share["frozen"] == 0 < share["partial"] < 0.7 < share["full"] < 1

    swapped = {**weights, "sha256": "0" * 64}
    with pytest.raises(AssertionError, match="does not match the expected"):
        train(prepared, "lab-swapped", 1, TINY, "lab", "frozen", weights=swapped,
              backbone_file={**declaration, "sha256": "0" * 64})


def test_early_stopping_keeps_the_best_epoch(prepared):
    """A learning rate far too high: the validation loss stops improving, training stops
    ``patience`` epochs after the best epoch, and the saved model is the best epoch's."""
    run = train(prepared, "stopping", 1, {**TINY, "epochs": 12, "learning_rate": 0.3, "early_stopping_patience": 2})
    info = json.loads((run / "train.json").read_text())
    losses = pd.read_csv(run / "history.csv")["val_loss"].to_numpy()
    best = int(np.argmin(losses)) + 1
    assert info["stopped_early"] and info["epochs_run"] == best + 2 < 12 and info["best_epoch"] == best
    validation = pd.read_csv(run / "val_predictions.csv", keep_default_na=False)
    classes = info["classes"]
    labels = validation["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    probabilities = validation[[f"p_{c}" for c in classes]].to_numpy()
    saved = weighted_scores(probabilities, labels, np.asarray(info["class_weights"]))["val_loss"]
    assert saved == pytest.approx(losses.min(), rel=1e-4) and saved < losses[-1]


def test_frozen_features_are_shared_by_strategies_and_keyed_by_what_draws_them(prepared):
    """One cache file per backbone × weights (random init: × seed, which draws them): the
    linear probe reuses the frozen run's features; another seed's random backbone does not."""
    frozen = json.loads((train(prepared, "fc/frozen1", 1, TINY, "vgg16", "frozen") / "train.json").read_text())
    probe = json.loads((train(prepared, "fc/probe1", 1, TINY, "vgg16", "linear_probe") / "train.json").read_text())
    other = json.loads((train(prepared, "fc/frozen2", 2, TINY, "vgg16", "frozen", split_seed=1)
                        / "train.json").read_text())
    assert frozen["feature_cache"] == probe["feature_cache"] != other["feature_cache"]
    assert (frozen["feature_cache_reused"], probe["feature_cache_reused"], other["feature_cache_reused"]) == (
        False, True, False)
    assert Path(frozen["feature_cache"]).parent == prepared / "cache"
    assert probe["epochs_run"] == 0 and frozen["epochs_run"] == TINY["epochs"]
    assert not frozen["augmentation_applied"]

    through = json.loads((train(prepared, "fc/through", 1, {**TINY, "frozen_feature_cache": False}, "vgg16",
                                "frozen") / "train.json").read_text())
    assert through["feature_cache"] is None and through["augmentation_applied"]
    phases = pd.read_csv(prepared / "fc/through/history.csv")["phase"].tolist()
    assert phases == ["linear probe", "head", "head"]  # the head trains through the frozen backbone


def test_class_weights_precision_and_xla_are_applied_and_recorded(prepared):
    """balanced: n / (k · n_class) from this run's training images; none: ones; the
    precision policy and the XLA setting are recorded as applied."""
    split = pd.read_csv(prepared / "results/tiny/splits/seed1.csv", keep_default_na=False)
    counts = split[split["subset"] == "train"]["label"].value_counts().sort_index().to_numpy()
    balanced = json.loads((prepared / "a/train.json").read_text()) if (prepared / "a/train.json").exists() else \
        json.loads((train(prepared, "a", 1, TINY, split_seed=1) / "train.json").read_text())
    assert balanced["class_weights"] == pytest.approx(counts.sum() / (len(counts) * counts), rel=1e-5)
    plain = json.loads((train(prepared, "plain", 1, {**TINY, "epochs": 1, "class_weight": "none",
                                                     "mixed_precision": "bfloat16", "xla": False})
                        / "train.json").read_text())
    assert plain["class_weights"] == [1.0, 1.0, 1.0]
    assert (plain["precision_policy"], plain["xla"], plain["deterministic_ops"]) == ("mixed_bfloat16", False, True)


def train_pack(work: Path, folder: str, seeds: list[int], training: dict, model: str = "scratch_cnn",
               strategy: str = "scratch", runs_at_once: int = 1, environ: dict | None = None,
               weights: dict | None = None, extra: tuple = (), started: bool = False):
    """Several seeds of one configuration in one `python -m scripts train-pack` job,
    each into ``work/folder/seed<s>``; the pack's record is ``work/folder/pack.json``.
    ``extra``: more options; ``started``: return the running process (Popen) instead of
    waiting for it."""
    members = [{"seed": seed, "split": str(work / f"results/tiny/splits/seed{seed}.csv"),
                "checkpoint": str(work / folder / f"seed{seed}/checkpoint"),
                "log": str(work / folder / f"logs/seed{seed}.log"),
                "outputs": {name: str(work / folder / f"seed{seed}" / file) for name, file in RUN_FILES.items()}}
               for seed in seeds]
    command = [sys.executable, "-m", "scripts", "train-pack", "--dataset", "tiny", "--model", model,
               "--strategy", strategy, "--weights-name", "none", "--fraction", "1.0",
               "--images", str(work / "results/tiny/data/images_32px.npy"),
               "--settings", json.dumps(settings(training, weights)), "--feature-cache", str(work / "cache"),
               "--threads", "1", "--record", str(work / folder / "pack.json"), "--members", json.dumps(members),
               "--runs-at-once", str(runs_at_once), *extra]
    env = {**os.environ, "PYTHONPATH": str(PROJECT), **(environ or {})}
    if started:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(("model", "strategy", "weights_file"),
                         [("scratch_cnn", "scratch", False), ("efficientnetb0", "partial", True)])
def test_a_packed_run_equals_the_same_run_trained_alone(prepared, model, strategy, weights_file):
    """Seed 2 trained after seed 1 in one pack process gives the probabilities, history
    and metrics of seed 2 trained alone: the scratch CNN is built again for seed 2; the
    EfficientNet from a weights file is not (its weights do not depend on the seed), and
    its dropout and stochastic depth draw from Keras' seed generators, which the pack
    must reset."""
    weights = {"source": "file", "path": random_notop_file(prepared / f"{model}_notop.h5", model)} \
        if weights_file else None
    packed = train_pack(prepared, f"pack-{model}", [1, 2], TINY, model, strategy, weights=weights)
    assert packed.returncode == 0, packed.stderr[-3000:]
    alone = train(prepared, f"alone-{model}", 2, TINY, model, strategy, weights=weights)
    pack_dir = prepared / f"pack-{model}/seed2"
    for name in ("predictions.csv", "val_predictions.csv"):
        assert (pack_dir / name).read_text() == (alone / name).read_text()
    timing = ["seconds"]
    assert (pd.read_csv(pack_dir / "history.csv").drop(columns=timing)
            .equals(pd.read_csv(alone / "history.csv").drop(columns=timing)))
    assert json.loads((pack_dir / "metrics.json").read_text()) == json.loads((alone / "metrics.json").read_text())
    assert np.load(pack_dir / "gradcam.npz")["cams"].tobytes() == np.load(alone / "gradcam.npz")["cams"].tobytes()


def test_runs_side_by_side_train_at_the_same_time_and_equal_runs_trained_alone(prepared):
    """runs_at_once 2: seeds 1 and 2 train in two processes of one job at the same time
    (as several small runs share a GPU), each as it trains alone."""
    packed = train_pack(prepared, "side-by-side", [1, 2], TINY, runs_at_once=2)
    assert packed.returncode == 0, packed.stderr[-3000:]
    runs = json.loads((prepared / "side-by-side/pack.json").read_text())["runs"]
    assert [run["seed"] for run in runs] == [1, 2] and runs[0]["pid"] != runs[1]["pid"]
    spans = [(run["started_at"], run["started_at"] + run["wall_seconds"]) for run in runs]
    assert max(start for start, _ in spans) < min(end for _, end in spans), spans
    alone = train(prepared, "alone-seed1", 1, TINY)
    for name in ("predictions.csv", "val_predictions.csv", "metrics.json"):
        assert (prepared / "side-by-side/seed1" / name).read_text() == (alone / name).read_text()


def test_a_failed_member_keeps_its_siblings_and_the_rerun_trains_only_it(prepared):
    """Seed 2's split is corrupt: seed 1 still trains and keeps its files, the pack fails
    naming seed 2 and writes no record; Snakemake's retry of it stops at once (a corrupt
    file fails every attempt); once the split is right, the same pack (a new snakemake:
    attempt 1) trains seed 2 and leaves seed 1 untouched."""
    work = prepared / "failing"
    (work / "results/tiny/splits").mkdir(parents=True)
    (work / "results/tiny/data").mkdir(parents=True)
    for seed in (1, 2):
        os.link(prepared / f"results/tiny/splits/seed{seed}.csv", work / f"results/tiny/splits/seed{seed}.csv.good")
    os.link(prepared / "results/tiny/data/images_32px.npy", work / "results/tiny/data/images_32px.npy")
    (work / "results/tiny/splits/seed1.csv").write_text((work / "results/tiny/splits/seed1.csv.good").read_text())
    (work / "results/tiny/splits/seed2.csv").write_text("not,a,split\n")
    record = work / "pack/failure.json"
    failed = train_pack(work, "pack", [1, 2], TINY, extra=("--attempt", "1", "--failure-record", str(record)))
    assert failed.returncode == 1 and "seeds [2] failed" in failed.stderr, failed.stderr[-3000:]
    finished = work / "pack/seed1/train.json"
    before = finished.stat().st_mtime_ns
    assert not (work / "pack/seed2/train.json").exists() and not (work / "pack/pack.json").exists()
    log = (work / "pack/logs/seed2.log").read_text()
    assert "Traceback" in log + failed.stdout

    # Snakemake's retry (attempt 2) of a failure that repeats (bad data): it stops at once
    retried = train_pack(work, "pack", [1, 2], TINY, extra=("--attempt", "2", "--failure-record", str(record)))
    assert retried.returncode == 1 and retried.stderr.count("ERROR: ") == 1, retried.stderr[-3000:]
    assert "ERROR: not retried: attempt 1 of this pack failed in a way no retry can fix (seed 2: " in retried.stderr
    assert (work / "pack/logs/seed2.log").read_text() == log  # seed 2 did not even start
    assert json.loads(record.read_text())["attempt"] == 2  # ...and attempt 3 will not either

    (work / "results/tiny/splits/seed2.csv").write_text((work / "results/tiny/splits/seed2.csv.good").read_text())
    rerun = train_pack(work, "pack", [1, 2], TINY, extra=("--attempt", "1", "--failure-record", str(record)))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert not record.exists()  # a new snakemake (attempt 1) trains again
    assert finished.stat().st_mtime_ns == before and "seed 1: finished earlier" in rerun.stdout
    record = json.loads((work / "pack/pack.json").read_text())
    assert [run["seed"] for run in record["runs"]] == [1, 2] and (work / "pack/seed2/train.json").exists()


def process_with_open_file(parent: int, name: str) -> int | None:
    """The child process of ``parent`` that has a file named ``name`` open."""
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or parent_pid(int(proc.name)) != parent:
                continue
            if any(os.readlink(fd).endswith(name) for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except (OSError, ValueError, IndexError):
            continue  # the process ended while it was looked at
    return None


def test_a_process_killed_side_by_side_fails_only_its_own_seeds(prepared):
    """runs_at_once 2: seeds 1 and 2 train in two processes. The one training seed 2 is
    killed (SIGKILL, as the kernel's OOM killer does) mid-training: seed 1 still finishes
    and keeps its files, the pack fails naming seed 2 alone. (A process pool would be
    broken by the death and end seed 1's process too.)"""
    epochs = 40  # seed 1 must still be training when seed 2's process dies
    training = {**TINY, "epochs": epochs}
    job = train_pack(prepared, "killed", [1, 2], training, runs_at_once=2, started=True)
    state = prepared / "killed/seed2/checkpoint/state.json"
    deadline = time.time() + 300
    while not (state.exists() and json.loads(state.read_text())["epoch"] >= 1):
        assert time.time() < deadline and job.poll() is None, "seed 2 never checkpointed"
        time.sleep(0.05)
    victim = process_with_open_file(job.pid, "logs/seed2.log")
    assert victim is not None and process_with_open_file(job.pid, "logs/seed1.log") not in (None, victim)
    os.kill(victim, signal.SIGKILL)
    stdout, stderr = job.communicate(timeout=600)
    assert job.returncode == 1 and "seeds [2] failed" in stderr and "seeds [1] finished" in stderr, stderr[-3000:]
    assert "the process of seeds [2] died (exit code -9, killed by a signal: out of memory?)" in stdout
    seed1 = json.loads((prepared / "killed/seed1/train.json").read_text())
    assert seed1["epochs_run"] == epochs and not (prepared / "killed/seed2/train.json").exists()
