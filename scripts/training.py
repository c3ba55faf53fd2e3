"""Train one dataset × model × strategy × seed run, resumable from per-epoch checkpoints.

A checkpoint (model weights, optimizer variables, epoch, early-stopping state and
history) is written atomically after every epoch. A job killed by SIGTERM/SIGKILL
(Slurm time limit, preemption, Ctrl-C) resumes from its last finished epoch when the
workflow is run again. Each epoch's shuffling and augmentation derive from
``(seed, epoch)``, so a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import shutil
import socket
import time
from pathlib import Path

import numpy as np

from scripts import fsutil
from scripts.grid import phases
from scripts.models import build_model, count_params, last_conv_layer, set_trainable
from scripts.pipeline import augmentation, train_dataset


def configure_tensorflow(settings: dict, threads: int | None = None) -> dict:
    """Threads, GPU memory growth, precision and determinism; returns what was applied."""
    import keras
    import tensorflow as tf

    if threads:  # the job's CPU allocation (Snakemake threads / Slurm cpus)
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        # Without growth TF grabs the whole card, which breaks shared or MIG GPUs.
        tf.config.experimental.set_memory_growth(gpu, True)
    precision = settings.get("mixed_precision", "none")
    policy = {"none": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}[precision]
    keras.mixed_precision.set_global_policy(policy)
    if settings.get("deterministic", True):
        tf.config.experimental.enable_op_determinism()
    return {
        "devices": [gpu.name for gpu in gpus] or ["CPU"],
        "threads": threads,
        "precision_policy": policy,
        "xla": settings.get("xla", "auto"),
        "deterministic_ops": bool(settings.get("deterministic", True)),
    }


def environment() -> dict:
    """Where and with what this job ran (recorded in the run metadata and the report)."""
    import keras
    import tensorflow as tf

    return {
        "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def class_weights(labels: np.ndarray, n_classes: int, mode: str) -> dict[int, float] | None:
    """``balanced``: n / (k · n_c), so each class contributes equally to the loss."""
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=n_classes)
    return {c: float(len(labels) / (n_classes * counts[c])) for c in range(n_classes) if counts[c]}


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def phase_plan(strategy: str, epochs: int, warmup_epochs: int) -> list[tuple]:
    """``(phase, first_epoch, end_epoch)`` for each phase; warm-up epochs go to the head."""
    plan = phases(strategy)
    if len(plan) == 1:
        return [(plan[0], 0, epochs)]
    if not 0 < warmup_epochs < epochs:
        raise ValueError(
            f"training.warmup_epochs={warmup_epochs} must be between 1 and epochs-1 "
            f"(epochs={epochs}) for strategy {strategy!r}"
        )
    return [(plan[0], 0, warmup_epochs), (plan[1], warmup_epochs, epochs)]


class Checkpoint:
    """Per-epoch training state in ``directory``; ``state.json`` is written last.

    Keras's ``save_weights`` stores the optimizer variables with the layers, so one
    file per epoch is a complete checkpoint. The latest and the best epoch's files
    are kept; older ones are deleted once the new state is on disk.
    """

    def __init__(self, directory: str | Path, fingerprint: str):
        self.directory = Path(directory)
        self.fingerprint = fingerprint

    def load(self) -> dict | None:
        state_file = self.directory / "state.json"
        if not state_file.exists():
            return None
        state = fsutil.read_json(state_file)
        if state.get("fingerprint") != self.fingerprint:
            print(f"checkpoint in {self.directory} is from other settings; starting afresh")
            self.clear()
            return None
        return state

    def path(self, epoch: int) -> Path:
        return self.directory / f"epoch{epoch:04d}.weights.h5"

    def save(self, model, state: dict) -> None:
        with fsutil.atomic_path(self.path(state["epoch"])) as tmp:
            model.save_weights(tmp)
        fsutil.write_json(self.directory / "state.json", {**state, "fingerprint": self.fingerprint})
        keep = {self.path(state["epoch"]).name, self.path(state["best_epoch"] or 0).name}
        for old in self.directory.glob("epoch*.weights.h5"):
            if old.name not in keep:
                old.unlink()

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class FeatureCache:
    """Pooled features of every image of one dataset × image size under one frozen
    backbone (its weights file, or its seeded random init for ``weights: none``).

    The frozen runs of every seed share it (only the validation rows differ between
    seeds, so all images are cached) and later runs reuse it. It is written
    atomically: a run in parallel reads either a complete file or none, in which case
    it computes the same features itself.
    """

    def __init__(self, path: str | Path, images: np.ndarray, train_rows: np.ndarray, val_rows: np.ndarray):
        self.path = Path(path)
        self.images, self.train_rows, self.val_rows = images, train_rows, val_rows

    def load_or_compute(self, inference) -> tuple[np.ndarray, np.ndarray, float, bool]:
        """``(train features, val features, extraction seconds, reused)``."""
        started = time.perf_counter()
        features = np.load(self.path) if self.path.exists() else None
        reused = features is not None and len(features) == len(self.images)
        if not reused:
            features = inference.run(self.images)["pooled"]
            with fsutil.atomic_path(self.path) as tmp, open(tmp, "wb") as handle:
                np.save(handle, features)
        seconds = 0.0 if reused else time.perf_counter() - started
        return features[self.train_rows], features[self.val_rows], seconds, reused


def save_model_weights(model, path: str | Path) -> None:
    """Layer weights only: an uncompiled view of the model has no optimizer to save."""
    import keras

    with fsutil.atomic_path(path) as tmp:
        keras.Model(model.inputs, model.outputs).save_weights(tmp)


def fingerprint(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _compile(model, learning_rate: float, xla: str | bool) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=xla,
    )


def validation_scores(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Unweighted cross-entropy and accuracy, as Keras would report them."""
    picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    return {"val_loss": float(-np.log(picked).mean()),
            "val_accuracy": float((probabilities.argmax(1) == labels).mean())}


class EarlyStopping:
    """Validation-loss bookkeeping kept in the checkpoint state (so it survives resume)."""

    def __init__(self, state: dict, patience: int):
        self.state, self.patience = state, patience

    def update(self, epoch: int, val_loss: float) -> bool:
        """Record an epoch of the final phase; True when this epoch is the best so far."""
        best = self.state["best_val_loss"]
        if best is None or val_loss < best:
            self.state.update(best_val_loss=val_loss, best_epoch=epoch, wait=0)
            return True
        self.state["wait"] += 1
        self.state["stopped"] = bool(self.patience) and self.state["wait"] >= self.patience
        return False


def new_state() -> dict:
    return {"epoch": 0, "history": [], "best_val_loss": None, "best_epoch": None, "wait": 0,
            "stopped": False}


def train(x_train, y_train, x_val, y_val, *, model_name: str, strategy: str, seed: int,
          n_classes: int, settings: dict, weights: str | None, checkpoint: Checkpoint,
          feature_cache: FeatureCache | None = None):
    """Fit one run; returns ``(model, inference, history rows, summary dict)``.

    With a ``feature_cache`` (frozen strategy) the head trains on cached backbone features.
    """
    import keras

    from scripts.inference import InferencePass

    keras.utils.set_random_seed(seed)
    model, backbone = build_model(model_name, settings["image_size"], n_classes, weights,
                                  settings.get("dropout", 0.3))
    inference = InferencePass(model, last_conv_layer(model_name), settings["batch_size"])
    weights_by_class = class_weights(y_train, n_classes, settings.get("class_weight", "balanced"))
    if feature_cache is not None:
        state, extra = _train_head_on_features(model, inference, feature_cache, y_train, y_val,
                                               seed, settings, weights_by_class)
        resumed_from, trainable = 0, count_params(_head_model(model))
    else:
        state, resumed_from, trainable = _train_end_to_end(
            model, backbone, inference, x_train, y_train, x_val, y_val, strategy, seed, settings,
            weights_by_class, checkpoint)
        extra = {"augmentation_applied": settings.get("augmentation", {}).get("enabled", True)}
    history = state["history"]
    epoch_seconds = [row["seconds"] for row in history]
    summary = {
        "epochs_run": len(history),
        "best_epoch": state["best_epoch"],
        "stopped_early": state["stopped"],
        "resumed_from_epoch": resumed_from,
        "train_seconds": round(sum(epoch_seconds), 3),
        "seconds_per_epoch": round(float(np.median(epoch_seconds)), 3),
        "images_per_second": round(len(x_train) / float(np.median(epoch_seconds)), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **trainable,
        **extra,
    }
    return model, inference, history, summary


def _train_end_to_end(model, backbone, inference, x_train, y_train, x_val, y_val, strategy, seed,
                      settings, weights_by_class, checkpoint):
    """Train through the backbone phase by phase, checkpointing every epoch."""
    plan = phase_plan(strategy, settings["epochs"], settings.get("warmup_epochs", 0))
    state = checkpoint.load() or new_state()
    stopping = EarlyStopping(state, settings.get("early_stopping_patience", 0))
    resumed_from = state["epoch"]
    if resumed_from:
        # An uncompiled model skips the optimizer variables stored in the file.
        model.load_weights(checkpoint.path(resumed_from))
        print(f"resuming from checkpoint after epoch {resumed_from}")
    trainable = count_params(model)
    augment = augmentation(settings.get("augmentation", {}))
    for index, (phase, first, end) in enumerate(plan):
        if state["epoch"] >= end or state["stopped"]:
            continue
        set_trainable(model, backbone, phase.trainable, settings.get("partial_stages", 1))
        _compile(model, settings[phase.learning_rate_key], settings.get("xla", "auto"))
        trainable = count_params(model)
        if state["epoch"] > first:  # resumed inside this phase: restore Adam's moments too
            model.optimizer.build(model.trainable_variables)
            model.load_weights(checkpoint.path(state["epoch"]))
        for epoch in range(state["epoch"], end):
            started = time.perf_counter()
            data = train_dataset(x_train, y_train, settings["batch_size"], epoch_seed(seed, epoch), augment)
            fit = model.fit(data, epochs=epoch + 1, initial_epoch=epoch, shuffle=False,
                            class_weight=weights_by_class, verbose=2)
            scores = validation_scores(inference.run(x_val)["probabilities"], y_val)
            row = {"epoch": epoch + 1, "phase": phase.name,
                   "seconds": round(time.perf_counter() - started, 3),
                   **{k: float(v[-1]) for k, v in fit.history.items()}, **scores}
            print(f"epoch {epoch + 1}: {row}")
            state["history"].append(row)
            state["epoch"] = epoch + 1
            if index == len(plan) - 1:
                stopping.update(epoch + 1, scores["val_loss"])
            if state["epoch"] < plan[-1][2]:  # the finished model is saved right after
                checkpoint.save(model, state)
            if state["stopped"]:
                print(f"early stopping after epoch {epoch + 1}")
                break
    if state["best_epoch"] and state["best_epoch"] != state["epoch"]:
        model.load_weights(checkpoint.path(state["best_epoch"]))
    return state, resumed_from, trainable


def _head_model(model):
    """The new head alone, sharing its layers (and weights) with ``model``."""
    import keras

    pooled = keras.Input(model.get_layer("head_pool").output.shape[1:], name="pooled_features")
    x = pooled
    for name in ("head_norm", "head_dropout", "logits", "predictions"):
        x = model.get_layer(name)(x)
    return keras.Model(pooled, x)


def _train_head_on_features(model, inference, feature_cache, y_train, y_val, seed, settings,
                            weights_by_class):
    """Frozen strategy: the head trains on the backbone's cached pooled features.
    Augmentation would change the features, so it is off on this path (recorded in the
    run metadata and the report). All epochs run in one ``fit`` (a call per epoch cost
    more than the epoch itself); a killed run restarts instead of resuming."""
    import keras
    import tensorflow as tf

    train_features, val_features, extraction, reused = feature_cache.load_or_compute(inference)
    head = _head_model(model)
    _compile(head, settings["learning_rate"], settings.get("xla", "auto"))
    state = new_state()
    stopping = EarlyStopping(state, settings.get("early_stopping_patience", 0))
    best_weights, started = None, time.perf_counter()

    def on_epoch_end(epoch, logs):
        nonlocal best_weights, started
        seconds = time.perf_counter() - started + (extraction if epoch == 0 else 0)
        row = {"epoch": epoch + 1, "phase": "head (cached features)", "seconds": round(seconds, 3),
               **{k: float(v) for k, v in logs.items()}}
        print(f"epoch {epoch + 1}: {row}")
        state["history"].append(row)
        state["epoch"] = epoch + 1
        if stopping.update(epoch + 1, logs["val_loss"]):
            best_weights = head.get_weights()
        head.stop_training = state["stopped"]
        started = time.perf_counter()

    data = (tf.data.Dataset.from_tensor_slices((train_features, y_train))
            .shuffle(len(y_train), seed=seed, reshuffle_each_iteration=True).batch(settings["batch_size"]))
    head.fit(data, epochs=settings["epochs"], validation_data=(val_features, y_val), shuffle=False,
             class_weight=weights_by_class, verbose=0,
             callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)])
    head.set_weights(best_weights)
    return state, {"augmentation_applied": False, "feature_cache": str(feature_cache.path),
                   "feature_cache_reused": reused, "feature_extraction_seconds": round(extraction, 3)}
