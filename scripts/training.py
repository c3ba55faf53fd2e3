"""Train one dataset × model × strategy × pretraining × fraction × seed run.

Pretrained strategies first fit the new head on the frozen backbone's standardised
pooled features: a logistic regression whose L2 strength is chosen on validation
(the linear probe of Kornblith et al. 2019), then, for ``frozen`` and the warm-up of
``partial``/``full``, Adam epochs on the head that keep the best validation loss
(the probe itself included). ``partial``/``full`` then fine-tune end to end.

End-to-end epochs are checkpointed atomically (weights, optimizer variables, epoch,
early-stopping state, history). A job killed by SIGTERM/SIGKILL (Slurm time limit,
preemption, requeue) resumes from its last finished epoch; each epoch's batches and
augmentation derive from ``(seed, epoch)``, so a resumed run sees the same batches.

Losses and accuracies in the history are class-weighted in training *and*
validation (``class_weight: balanced``: every class counts equally), so the curves are
comparable and early stopping watches what the optimiser minimises.
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
from importlib import metadata
from pathlib import Path

import numpy as np

from scripts import fsutil
from scripts.grid import phases

PACKAGES = ("tensorflow", "keras", "numpy", "scikit-learn", "scipy", "pandas", "h5py",
            "opencv-python-headless", "pillow")
PROBE_C = tuple(10.0 ** np.arange(-4, 3))  # logistic-regression inverse L2 strengths tried


def allocated_threads(granted: int | None = None) -> int:
    """CPU threads for TensorFlow: up to twice the threads Snakemake granted, never more
    than the job's allocation (its CPU affinity mask, what a Slurm or cgroup allocation
    leaves visible, and ``SLURM_CPUS_PER_TASK``).

    Why twice: on a crowded grid Snakemake grants one core per job, and a job then idles
    its core whenever the other job is between epochs (tracing, validation, start-up) and
    trains alone at the end of the grid; measured on 2 cores (the seed notebook's study,
    ``make benchmark``), jobs with two threads each finished the study in 36 s, with one
    in 57 s. More than twice would oversubscribe a big machine's cores many times over.
    """
    limits = [len(os.sched_getaffinity(0))]
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        limits.append(int(os.environ["SLURM_CPUS_PER_TASK"]))
    if granted:
        limits.append(2 * granted)
    return max(1, min(limits))


def configure_tensorflow(settings: dict, threads: int) -> dict:
    """Threads, GPU memory growth, precision and determinism; returns what was applied."""
    import keras
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already ran in this process (a notebook, a test): keep its pools
        threads = tf.config.threading.get_intra_op_parallelism_threads() or len(os.sched_getaffinity(0))
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        # Without growth TF grabs the whole card, which breaks shared or MIG GPUs.
        tf.config.experimental.set_memory_growth(gpu, True)
    policy = {"none": "float32", "float16": "mixed_float16",
              "bfloat16": "mixed_bfloat16"}[settings["mixed_precision"]]
    keras.mixed_precision.set_global_policy(policy)
    if settings["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    return {
        "devices": [gpu.name for gpu in gpus] or ["CPU"],
        "threads": threads,
        "precision_policy": policy,
        "xla": settings["xla"],
        "deterministic_ops": settings["deterministic"],
    }


def environment() -> dict:
    """Where and with what this job ran (the report's software versions come from here)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_restart_count": os.environ.get("SLURM_RESTART_COUNT"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "python": platform.python_version(),
        "packages": versions,
    }


def class_weights(labels: np.ndarray, n_classes: int, mode: str) -> np.ndarray:
    """Per-class loss weights: ``balanced`` = n / (k · n_c) (scikit-learn), else ones."""
    from sklearn.utils.class_weight import compute_class_weight

    if mode == "none":
        return np.ones(n_classes)
    present = np.unique(labels)
    weights = np.ones(n_classes)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return weights


def weighted_scores(probabilities: np.ndarray, labels: np.ndarray, weights_by_class: np.ndarray,
                    prefix: str = "val_") -> dict[str, float]:
    """Class-weighted cross-entropy (Σ w·l / n, as Keras reduces it) and accuracy
    (Σ w·correct / Σ w, as Keras's weighted metrics do)."""
    weights = weights_by_class[labels]
    picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    correct = probabilities.argmax(1) == labels
    return {f"{prefix}loss": float((weights * -np.log(picked)).mean()),
            f"{prefix}accuracy": float((weights * correct).sum() / weights.sum())}


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def reseed_random_layers(model, seed: int) -> None:
    """Set every random layer's generator (dropout, EfficientNet's stochastic depth) from
    ``seed``. Their state is not saved with the weights, so a run resumed from a
    checkpoint would otherwise draw other dropout masks than an uninterrupted one."""
    generators = [v for v in model.variables if v.path.endswith("seed_generator_state")]
    for index, state in enumerate(generators):
        state.assign(np.array([(seed * 1_000 + index) % 2**31, 0], dtype=state.dtype))


class Checkpoint:
    """Training state in ``directory``: the latest saved epoch's weights with the
    optimizer variables (Keras's ``save_weights`` stores both), the best epoch's weights,
    and ``state.json`` (epoch, early-stopping state, history), written last.

    A save is due every ``every_seconds`` of training (0: after every epoch): a killed
    job loses at most that much work, and a fast epoch does not pay for a save of the
    whole model each time.
    """

    def __init__(self, directory: str | Path, fingerprint: str, every_seconds: float):
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self.every_seconds = every_seconds
        self.last_save = time.monotonic()

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

    def due(self) -> bool:
        return time.monotonic() - self.last_save >= self.every_seconds

    def save(self, model, state: dict, best_weights: list | None) -> None:
        """Save the latest epoch, and the best epoch's weights (``best_weights``, kept in
        memory) when they are not on disk yet, then ``state.json``; older files go."""
        with fsutil.atomic_path(self.path(state["epoch"])) as tmp:
            model.save_weights(tmp)
        best = state["best_epoch"]
        if best is not None and best != state["epoch"] and not self.path(best).exists():
            latest = model.get_weights()
            model.set_weights(best_weights)
            with fsutil.atomic_path(self.path(best)) as tmp:
                model.save_weights(tmp)
            model.set_weights(latest)
        fsutil.write_json(self.directory / "state.json", {**state, "fingerprint": self.fingerprint})
        keep = {self.path(state["epoch"]).name, self.path(best if best is not None else state["epoch"]).name}
        for old in self.directory.glob("epoch*.weights.h5"):
            if old.name not in keep:
                old.unlink()
        self.last_save = time.monotonic()

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class FeatureCache:
    """Pooled features of the training-pool images (those of ``train/`` and ``val/``:
    ``rows``) of one dataset × image size under one frozen backbone (its weights file,
    or its seeded random init for ``weights: none``); the test images' rows stay NaN: no
    head ever trains or validates on them, and skipping them saves a fifth of the pass.

    Every pretrained strategy and seed shares it (only the validation rows differ
    between seeds) and later runs reuse it. It is written atomically: a run in parallel
    reads either a complete file or none, in which case it computes the same features
    itself. ``path=None`` computes without caching.
    """

    def __init__(self, path: str | Path | None, images: np.ndarray, rows: np.ndarray):
        self.path = Path(path) if path else None
        self.images, self.rows = images, rows

    def load_or_compute(self, inference) -> tuple[np.ndarray, float, bool]:
        """``(features, one row per image, extraction seconds, reused)``."""
        started = time.perf_counter()
        if self.path and self.path.exists():
            features = np.load(self.path)
            if len(features) == len(self.images) and not np.isnan(features[self.rows]).any():
                return features, 0.0, True
        pooled = inference.run(self.images[self.rows])["pooled"]
        features = np.full((len(self.images), pooled.shape[1]), np.nan, np.float32)
        features[self.rows] = pooled
        if self.path:
            with fsutil.atomic_path(self.path) as tmp, open(tmp, "wb") as handle:
                np.save(handle, features)
        return features, time.perf_counter() - started, False


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
        weighted_metrics=["accuracy"],
        jit_compile=xla,
    )


class EarlyStopping:
    """Validation-loss bookkeeping kept in the checkpoint state (so it survives resume)."""

    def __init__(self, state: dict, patience: int):
        self.state, self.patience = state, patience

    def update(self, epoch: int, val_loss: float) -> bool:
        """Record an epoch; True when this epoch is the best so far."""
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


def head_epochs(strategy: str, settings: dict) -> int:
    """Adam epochs of the head on cached features after the probe (0 for linear_probe)."""
    if strategy == "frozen":
        return settings["epochs"] if settings["frozen_feature_cache"] else 0
    if strategy in ("partial", "full"):
        return settings["warmup_epochs"]
    return 0


def end_to_end_phases(strategy: str, settings: dict) -> list:
    """The phases that train through the backbone on augmented images."""
    from scripts.grid import Phase

    if strategy == "frozen" and not settings["frozen_feature_cache"]:
        return [Phase("head", "head", "learning_rate")]
    return phases(strategy)


def train(x_train, y_train, x_val, y_val, *, model_name: str, strategy: str, seed: int,
          n_classes: int, settings: dict, weights: str | None, checkpoint: Checkpoint,
          feature_cache: FeatureCache | None, train_rows: np.ndarray, val_rows: np.ndarray):
    """Fit one run; returns ``(model, inference, history rows, summary dict)``.

    ``feature_cache`` (pretrained strategies) holds the pooled features of the training
    pool, one row per image; ``train_rows``/``val_rows`` pick this run's rows from it.
    """
    import keras

    from scripts.inference import InferencePass
    from scripts.models import build_model, last_conv_layer, trainable_share

    keras.utils.set_random_seed(seed)
    model, backbone = build_model(model_name, settings["image_size"], n_classes, weights,
                                  dropout=settings["dropout"], bn_momentum=settings["scratch_bn_momentum"])
    inference = InferencePass(model, last_conv_layer(model_name), settings["batch_size"])
    weights_by_class = class_weights(y_train, n_classes, settings["class_weight"])
    state = checkpoint.load() or new_state()
    resumed_from = state["epoch"]
    extra = {}
    if feature_cache is not None and not state["history"]:
        features, extraction, reused = feature_cache.load_or_compute(inference)
        extra = fit_head(model, features[train_rows], y_train, features[val_rows], y_val, settings,
                         weights_by_class, head_epochs(strategy, settings), state)
        state["history"][0]["seconds"] += round(extraction, 3)
        extra.update(feature_cache=str(feature_cache.path) if feature_cache.path else None,
                     feature_cache_reused=reused, feature_extraction_seconds=round(extraction, 3))
        if end_to_end_phases(strategy, settings):
            state.update(stopped=False, wait=0)  # a warm-up that stopped early does not stop fine-tuning
            if state["epoch"]:  # the warm-up's head is the fine-tuning's first candidate
                state["best_epoch"] = state["epoch"]
            else:  # the probe only initialises the head that trains end to end
                state.update(best_val_loss=None, best_epoch=None)
    trainable = _train_end_to_end(model, backbone, inference, x_train, y_train, x_val, y_val, strategy, seed,
                                  settings, weights_by_class, checkpoint, state, resumed_from)
    history = state["history"]
    timed = [row for row in history if row.get("images")]
    summary = {
        "epochs_run": sum(1 for row in history if row["epoch"] > 0),
        "best_epoch": state["best_epoch"],
        "stopped_early": state["stopped"],
        "resumed_from_epoch": resumed_from,
        "train_seconds": round(sum(row["seconds"] for row in history), 3),
        "seconds_per_epoch": round(float(np.median([r["seconds"] for r in timed])), 3) if timed else None,
        "images_per_second": (round(sum(r["images"] for r in timed) / sum(r["seconds"] for r in timed), 1)
                              if timed else None),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "class_weights": [round(float(w), 6) for w in weights_by_class],
        **trainable,
        "backbone_trainable_share": trainable_share(model, backbone) if backbone else 1.0,
        "augmentation_applied": bool(end_to_end_phases(strategy, settings))
        and settings["augmentation"]["enabled"],
        **extra,
    }
    return model, inference, history, summary


def _train_end_to_end(model, backbone, inference, x_train, y_train, x_val, y_val, strategy, seed,
                      settings, weights_by_class, checkpoint, state, resumed_from: int) -> dict:
    """Train through the backbone, checkpointing as due, keeping the best epoch's weights;
    returns the trainable parameter counts (of the head alone when nothing trains end to end)."""
    from scripts.models import count_params, set_trainable
    from scripts.pipeline import augmentation, train_dataset

    plan = end_to_end_phases(strategy, settings)
    if not plan:  # linear_probe, frozen on cached features
        set_trainable(model, backbone, "head")
        return count_params(model)
    (phase,) = plan
    resumed = resumed_from > 0
    if resumed:  # an uncompiled model skips the optimizer variables stored in the file
        model.load_weights(checkpoint.path(state["epoch"]))
    set_trainable(model, backbone, phase.trainable, settings["partial_stages"],
                  bn_momentum=settings["scratch_bn_momentum"])
    _compile(model, settings[phase.learning_rate_key], settings["xla"])
    if resumed:  # and now Adam's moments too
        model.optimizer.build(model.trainable_variables)
        model.load_weights(checkpoint.path(state["epoch"]))
        print(f"resuming from checkpoint after epoch {state['epoch']}")
    # The best epoch's weights, kept in memory (on disk only when a checkpoint is saved).
    best_weights = None if resumed else model.get_weights()
    stopping = EarlyStopping(state, settings["early_stopping_patience"])
    augment = augmentation(settings["augmentation"])
    sample_weights = weights_by_class[y_train].astype(np.float32)
    for epoch in range(state["epoch"], settings["epochs"]):
        if state["stopped"]:
            break
        started = time.perf_counter()
        reseed_random_layers(model, epoch_seed(seed, epoch))
        data = train_dataset(x_train, y_train, sample_weights, settings["batch_size"],
                             epoch_seed(seed, epoch), augment)
        fit = model.fit(data, epochs=epoch + 1, initial_epoch=epoch, shuffle=False, verbose=2)
        scores = weighted_scores(inference.run(x_val)["probabilities"], y_val, weights_by_class)
        row = {"epoch": epoch + 1, "phase": phase.name, "images": len(x_train),
               "seconds": round(time.perf_counter() - started, 3),
               **{k: float(v[-1]) for k, v in fit.history.items()}, **scores}
        print(f"epoch {epoch + 1}: {row}")
        state["history"].append(row)
        state["epoch"] = epoch + 1
        if stopping.update(epoch + 1, scores["val_loss"]):
            best_weights = model.get_weights()
        if state["stopped"]:
            print(f"early stopping after epoch {epoch + 1}")
        elif state["epoch"] < settings["epochs"] and checkpoint.due():  # the finished model is saved next
            checkpoint.save(model, state, best_weights)
    if state["best_epoch"] is not None and state["best_epoch"] != state["epoch"]:
        if best_weights is None:  # the best epoch came before a resume: it is on disk
            model.load_weights(checkpoint.path(state["best_epoch"]))
        else:
            model.set_weights(best_weights)
    return count_params(model)


def _head_model(model):
    """The new head alone (pooled features in), sharing its layers with ``model``."""
    import keras

    pooled = keras.Input(model.get_layer("head_pool").output.shape[1:], name="pooled_features")
    x = model.get_layer("head_norm")(pooled)
    x = model.get_layer("head_dropout")(x)
    return keras.Model(pooled, model.get_layer("predictions")(model.get_layer("logits")(x)))


def linear_probe(train_features, y_train, val_features, y_val, n_classes: int,
                 weights_by_class: np.ndarray, mode: str):
    """Multinomial logistic regression on standardised features, its inverse L2
    strength ``C`` chosen on the class-weighted validation loss.

    Returns ``(kernel (d, k), bias (k,), C, grid rows)`` in the head's logit form.
    """
    from sklearn.linear_model import LogisticRegression

    class_weight = None if mode == "none" else dict(enumerate(weights_by_class))
    best, rows = None, []
    for c in PROBE_C:
        probe = LogisticRegression(C=c, class_weight=class_weight, max_iter=5000)
        probe.fit(train_features, y_train)
        probabilities = np.zeros((len(y_val), n_classes))
        probabilities[:, probe.classes_] = probe.predict_proba(val_features)
        scores = weighted_scores(probabilities, y_val, weights_by_class)
        rows.append({"C": c, **scores})
        if best is None or scores["val_loss"] < best[0]:
            best = (scores["val_loss"], c, probe)
    _, c, probe = best
    kernel = np.zeros((train_features.shape[1], n_classes), np.float32)
    bias = np.zeros(n_classes, np.float32)
    if len(probe.classes_) == 2:  # one logit z for classes_[1]: softmax([0, z]) = sigmoid(z)
        kernel[:, probe.classes_[1]], bias[probe.classes_[1]] = probe.coef_[0], probe.intercept_[0]
    else:
        kernel[:, probe.classes_], bias[probe.classes_] = probe.coef_.T, probe.intercept_
    return kernel, bias, c, rows


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation for the head's standardisation.

    A feature that is almost always zero (a ReLU channel that rarely fires) has a
    near-zero deviation; dividing by it would amplify it a millionfold once fine-tuning
    moves the backbone, and the loss explodes. Deviations are floored at a tenth of the
    median deviation (StandardScaler leaves constant features unscaled for the same reason).
    """
    mean, scale = features.mean(axis=0), features.std(axis=0)
    floor = 0.1 * float(np.median(scale)) or 1.0
    return mean, np.maximum(scale, floor)


def fit_head(model, train_features, y_train, val_features, y_val, settings, weights_by_class,
             epochs: int, state: dict) -> dict:
    """Standardise the features in the head, fit the linear probe into it, then train
    the head ``epochs`` more epochs with Adam and dropout, keeping the weights with the
    best validation loss (the probe's included). Fills ``state``'s history."""
    import keras

    from scripts.models import set_feature_statistics

    started = time.perf_counter()
    mean, scale = feature_statistics(train_features)
    set_feature_statistics(model, mean, scale**2)
    z_train, z_val = (train_features - mean) / scale, (val_features - mean) / scale
    n_classes = len(weights_by_class)
    kernel, bias, c, grid = linear_probe(z_train, y_train, z_val, y_val, n_classes, weights_by_class,
                                         settings["class_weight"])
    model.get_layer("logits").set_weights([kernel, bias])
    head = _head_model(model)
    _compile(head, settings["learning_rate"], settings["xla"])
    stopping = EarlyStopping(state, settings["early_stopping_patience"])

    def record(epoch: int, phase: str, logs: dict, seconds: float) -> None:
        nonlocal best_weights
        row = {"epoch": epoch, "phase": phase, "seconds": round(seconds, 3),
               **{k: float(v) for k, v in logs.items()}}
        print(f"epoch {epoch}: {row}")
        state["history"].append(row)
        state["epoch"] = epoch
        if stopping.update(epoch, row["val_loss"]):
            best_weights = head.get_weights()
        head.stop_training = state["stopped"]

    best_weights = None
    probe_scores = {**weighted_scores(head.predict(train_features, verbose=0), y_train,
                                      weights_by_class, prefix=""),
                    **weighted_scores(head.predict(val_features, verbose=0), y_val, weights_by_class)}
    record(0, "linear probe", {**probe_scores, "probe_C": c}, time.perf_counter() - started)
    if epochs:
        started = time.perf_counter()

        def on_epoch_end(epoch, logs):
            nonlocal started
            record(epoch + 1, "head (cached features)", logs, time.perf_counter() - started)
            state["history"][-1]["images"] = len(y_train)
            started = time.perf_counter()

        sample_weights = weights_by_class[y_train].astype(np.float32)
        head.fit(train_features, y_train, sample_weight=sample_weights, batch_size=settings["batch_size"],
                 epochs=epochs, shuffle=True, verbose=0,
                 validation_data=(val_features, y_val, weights_by_class[y_val].astype(np.float32)),
                 callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)])
        head.set_weights(best_weights)
    return {"probe_C": c, "probe_grid": grid}
