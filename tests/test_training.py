"""Training jobs as the workflow runs them: determinism, and resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import PROJECT, copy_dataset, snakemake, write_config

TINY = {"image_size": 32, "batch_size": 16, "epochs": 2, "warmup_epochs": 1,
        "learning_rate": 1e-3, "finetune_learning_rate": 1e-4, "partial_layers": 4,
        "early_stopping_patience": 0}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Verified, decoded and split data for direct `python -m scripts train` calls."""
    work = tmp_path_factory.mktemp("prepared")
    data = copy_dataset(work / "data", {"train": 12, "test": 4})
    config = write_config(work / "c.yaml", data, models=["scratch_cnn"], strategies=["scratch"],
                          seeds=[1, 2], training=TINY)
    snakemake(work, "--configfile", str(config), "--cores", "2", "--until", "split", "prepare_images")
    return work


def train(work: Path, results: str, seed: int, settings: dict) -> Path:
    """One training run of the prepared data into ``<results>/tiny/runs/…/seed<seed>``."""
    run_dir = work / results / "tiny" / "runs" / "scratch_cnn" / "scratch" / f"seed{seed}"
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    done = subprocess.run([sys.executable, "-m", "scripts", "train", "--images",
                    str(work / "results/tiny/data/images_32px.npy"), "--split",
                    str(work / f"results/tiny/splits/seed{seed}.csv"), "--run-dir", str(run_dir),
                    "--settings", json.dumps(settings), "--threads", "1"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def test_same_seed_same_metrics_other_seed_differs(prepared):
    first, again, other = (train(prepared, results, seed, TINY)
                           for results, seed in (("results", 1), ("again", 1), ("results", 2)))
    first_metrics, again_metrics = (json.loads((d / "metrics.json").read_text()) for d in (first, again))
    for key in ("accuracy", "f1_macro", "auc", "confusion_matrix"):
        assert first_metrics[key] == again_metrics[key]
    probabilities = [(d / "predictions.csv").read_text() for d in (first, again, other)]
    assert probabilities[0] == probabilities[1]  # bit-identical probabilities
    assert probabilities[2] != probabilities[0]


def training_pid(run_dir: str) -> int | None:
    """The `python -m scripts train` process of ``run_dir`` (as the rule passes it)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"scripts" in cmdline and b"train" in cmdline and run_dir.encode() in cmdline:
                return int(proc.name)
    return None


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_training_resumes_from_its_checkpoint(tmp_path, signal_number):
    data = copy_dataset(tmp_path / "data", {"train": 16, "test": 4})
    epochs = 8
    config = write_config(tmp_path / "c.yaml", data, models=["scratch_cnn"], strategies=["scratch"],
                          training={**TINY, "epochs": epochs})
    run_dir = tmp_path / "results/tiny/runs/scratch_cnn/scratch/seed1"
    command = [sys.executable, "-m", "snakemake", "-s", str(PROJECT / "workflow/Snakefile"),
               "--directory", str(tmp_path), "--configfile", str(config), "--cores", "1",
               "--show-failed-logs"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    workflow = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    state = run_dir / "checkpoint" / "state.json"
    deadline = time.time() + 300
    while not (state.exists() and json.loads(state.read_text())["epoch"] >= 1):
        assert time.time() < deadline and workflow.poll() is None, "no checkpoint appeared"
        time.sleep(0.05)
    os.kill(training_pid("results/tiny/runs/scratch_cnn/scratch/seed1"), signal_number)
    output = workflow.communicate(timeout=120)[0].decode()
    assert workflow.returncode != 0, output[-2000:]
    killed_at = json.loads(state.read_text())["epoch"]
    assert 1 <= killed_at < epochs
    assert not (run_dir / "train.json").exists() and not (run_dir / "model.weights.h5").exists()

    snakemake(tmp_path, "--configfile", str(config), "--cores", "1")
    info = json.loads((run_dir / "train.json").read_text())
    assert info["resumed_from_epoch"] >= killed_at and info["epochs_run"] == epochs
    log = (tmp_path / "logs/tiny/scratch_cnn/scratch/seed1/train.log").read_text()
    assert f"resuming from checkpoint after epoch {info['resumed_from_epoch']}" in log
    assert not (run_dir / "checkpoint").exists()


class PooledMean:
    """Stands in for ``Inference``: the 'features' are each image's channel means."""

    calls = 0

    def run(self, images):
        PooledMean.calls += 1
        return {"pooled": np.asarray(images, dtype=np.float32).mean(axis=(1, 2))}


def test_feature_cache_is_computed_once_and_shared(tmp_path):
    from scripts.training import FeatureCache

    images = np.random.default_rng(0).integers(0, 255, (10, 4, 4, 3), dtype=np.uint8)
    path = tmp_path / "cache" / "features.npy"
    seed1 = FeatureCache(path, images, np.array([0, 1, 2, 3]), np.array([4, 5]))
    train, val, seconds, reused = seed1.load_or_compute(PooledMean())
    assert not reused and seconds > 0 and PooledMean.calls == 1
    assert np.allclose(train, images[:4].mean(axis=(1, 2))) and val.shape == (2, 3)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind

    seed2 = FeatureCache(path, images, np.array([0, 1, 2, 4]), np.array([3, 5]))  # another val split
    train2, val2, seconds2, reused2 = seed2.load_or_compute(PooledMean())
    assert reused2 and seconds2 == 0 and PooledMean.calls == 1
    assert np.allclose(val2[0], train[3])

    np.save(path, np.zeros((3, 3), np.float32))  # a cache of another image set is not trusted
    assert not FeatureCache(path, images, np.array([0]), np.array([1])).load_or_compute(PooledMean())[3]
