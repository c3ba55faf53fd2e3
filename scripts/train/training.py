"""Train one dataset × model × strategy × pretraining × fraction × seed run, then
evaluate it in the same process (a second job would pay TensorFlow's start-up and the
model build again).

Pretrained strategies first fit the new head on the frozen backbone's standardised
pooled features (``scripts.train.probe``): the linear probe, then, for ``frozen`` and the
warm-up of ``partial``/``full``, Adam epochs on the head that keep the best validation
loss (the probe itself included). ``partial``/``full`` then fine-tune end to end.

End-to-end epochs are checkpointed (``scripts.train.checkpoint``). A job killed by
SIGTERM/SIGKILL (Slurm time limit, preemption, requeue) resumes from its last saved
epoch; each epoch's batches and augmentation derive from ``(seed, epoch)``, so a resumed
run sees the same batches. Every phase minimises and reports the class-weighted loss of
``scripts.train.objective``.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scripts.common import fsutil, tracing
from scripts.plan.grid import PRETRAINED_STRATEGIES, SCRATCH
from scripts.train.checkpoint import Checkpoint, EarlyStopping, continue_after_warm_up, fingerprint, new_state
from scripts.train.objective import class_weights, compile_model, weighted_scores
from scripts.train.probe import FeatureCache, feature_cache_path, fit_head


@dataclass(frozen=True)
class Phase:
    name: str
    trainable: str  # see models.set_trainable
    learning_rate_key: str  # key in the training settings


def phases(strategy: str) -> list[Phase]:
    """The phases that train through the backbone; the head of the pretrained strategies
    is first fitted on the frozen backbone's features (see probe.fit_head)."""
    return {
        SCRATCH: [Phase("train", "all", "learning_rate")],
        "frozen": [],
        "linear_probe": [],
        "partial": [Phase("finetune", "top", "finetune_learning_rate")],
        "full": [Phase("finetune", "backbone", "finetune_learning_rate")],
    }[strategy]


def end_to_end_phases(strategy: str, settings: dict) -> list[Phase]:
    """The phases that train through the backbone on augmented images."""
    if strategy == "frozen" and not settings["frozen_feature_cache"]:
        return [Phase("head", "head", "learning_rate")]
    return phases(strategy)


def head_epochs(strategy: str, settings: dict) -> int:
    """Adam epochs of the head on cached features after the probe (0 for linear_probe)."""
    if strategy == "frozen":
        return settings["epochs"] if settings["frozen_feature_cache"] else 0
    if strategy in ("partial", "full"):
        return settings["warmup_epochs"]
    return 0


@dataclass(frozen=True)
class RunInputs:
    """What a run reads: the decoded images (index order) and its split table, the files
    they came from (their identity keys the checkpoint and the feature cache), and per
    external test set its ``dataset`` name, ``class_map``, decoded ``images`` and ``index``."""

    images: np.ndarray
    split: pd.DataFrame
    images_path: str
    split_path: str
    external_tests: list[dict]


@dataclass
class TrainedRun:
    """A run's results: the model, and a value per name of ``scripts.common.layout.RUN_FILES``
    but ``model`` (``gradcam``: the ``cams`` and their ``paths``); ``checkpoint`` holds
    the training state until every result is written."""

    model: object
    results: dict
    checkpoint: Checkpoint


class SharedModel:
    """One configuration's model, its compiled optimizers and its traced functions (the
    train steps, the inference pass, Grad-CAM), built once and reused by every seed a
    pack trains in one process: building and tracing a large backbone costs seconds of
    Python per run on a CPU host. Each seed still starts where a run trained alone
    starts (``load``, ``compile``). A run trained alone uses a new one, so both take
    one path."""

    def __init__(self):
        self.key = self.model = self.backbone = self.inference = self.initial = None
        self.heads: dict[int, object] = {}
        self.optimizer_states: dict[tuple, list] = {}

    def load(self, key: tuple, build, gradcam_min_cells: int, batch_size: int, seed_free: bool):
        """``(model, backbone layer names, inference pass)`` at the weights a fresh
        ``build()`` under the run's seed has. ``key``: what the architecture depends on
        (another key starts over); ``seed_free``: the build's weights do not depend on
        the seed (a weights file's backbone under a strategy whose head the linear probe
        sets; the random layers' generators are reseeded by the caller), so later seeds
        restore the first build's weights instead of building again. The inference pass
        explains the layer :func:`~scripts.train.models.explained_layer` chooses with
        ``gradcam_min_cells``."""
        from scripts.train.inference import InferencePass
        from scripts.train.models import explained_layer

        key = (*key, seed_free)
        if key != self.key:  # the pack's first run, or another architecture: start over
            self.heads.clear()
            self.optimizer_states.clear()
            self.key = key
            self.model, self.backbone = build()
            self.inference = InferencePass(self.model, explained_layer(self.model, gradcam_min_cells)[0],
                                           batch_size)
            self.initial = [v.numpy() for v in self.model.variables] if seed_free else None
            return self.model, self.backbone, self.inference
        # a fresh build's values, the random layers' generator states too
        values = self.initial if seed_free else [v.numpy() for v in build()[0].variables]
        for variable, value in zip(self.model.variables, values, strict=True):
            variable.assign(value)
        return self.model, self.backbone, self.inference

    def head(self, model):
        """The new head alone (:func:`scripts.train.probe.head_model`), made once."""
        from scripts.train.probe import head_model

        if id(model) not in self.heads:
            self.heads[id(model)] = head_model(model)
        return self.heads[id(model)]

    def compile(self, model, phase: str, learning_rate: float, xla) -> None:
        """Compile ``model`` for ``phase`` with a new Adam the first time; later seeds
        reset that optimizer to its initial state, keeping the traced train step."""
        key = (id(model), phase)
        if key not in self.optimizer_states:
            compile_model(model, learning_rate, xla)
            model.optimizer.build(model.trainable_variables)
            self.optimizer_states[key] = [v.numpy() for v in model.optimizer.variables]
        else:
            for variable, value in zip(model.optimizer.variables, self.optimizer_states[key], strict=True):
                variable.assign(value)


def run(identity, inputs: RunInputs, settings: dict, checkpoint_dir: str, feature_cache_dir: str,
        threads: int | None = None, shared: SharedModel | None = None) -> TrainedRun:
    """Fit one run (``identity``: its dataset, model, strategy, weights, fraction and
    seed) and evaluate it on the validation and test sets with Grad-CAM, and on every
    external test set. ``settings``: the run's ``training``, ``weights``, ``positive_class``
    and ``gradcam`` (``min_cells``); ``threads``: the CPU threads granted; ``shared``: the
    model the pack's earlier seeds built (see :class:`SharedModel`)."""
    from scripts.train.predictions import evaluate, evaluate_external
    from scripts.train.runtime import allocated_threads, configure_tensorflow, environment
    from scripts.weights.weight_files import check, first_use_sha256

    train_settings, weights = settings["training"], settings["weights"]
    applied = configure_tensorflow(train_settings, allocated_threads(threads))
    if weights.get("path"):  # never train on a corrupt or swapped weights file
        expected = first_use_sha256(weights["path"]) if weights.get("trust_on_first_use") else weights.get("sha256")
        weights = {**weights, "sha256": check(weights["path"], weights.get("md5"), expected)}
    split_table = inputs.split
    classes, label_ids, rows = subsets(split_table, identity.fraction)
    checkpoint = Checkpoint(
        checkpoint_dir,
        fingerprint(settings=train_settings, weights=weights, split=fsutil.file_digest(inputs.split_path),
                    images=Path(inputs.images_path).stat().st_size, run=vars(identity)),
        train_settings["checkpoint_seconds"],
    )
    feature_cache = None
    if identity.strategy in PRETRAINED_STRATEGIES:
        feature_cache = shared_feature_cache(identity, inputs, feature_cache_dir, train_settings,
                                             weights.get("sha256"))
    model, inference, history, summary = train(
        inputs.images[rows["train"]], label_ids[rows["train"]], inputs.images[rows["val"]],
        label_ids[rows["val"]], n_classes=len(classes), settings=train_settings,
        weights=weights.get("path"), checkpoint=checkpoint, model_name=identity.model,
        strategy=identity.strategy, seed=identity.seed, feature_cache=feature_cache,
        train_rows=rows["train"], val_rows=rows["val"],
        gradcam_min_cells=settings["gradcam"]["min_cells"],
        shared=shared or SharedModel(), backbone_file=settings.get("backbone_file"),
    )
    results = evaluate(inference, identity, inputs.images, label_ids, split_table, rows, classes,
                       settings["positive_class"])
    results["external"] = evaluate_external(inference, classes, inputs.external_tests)
    results["history"] = pd.DataFrame(history)
    results["info"] = {
        **vars(identity), "classes": classes, "n_train": len(rows["train"]), "n_val": len(rows["val"]),
        "n_test": len(rows["test"]), "settings": train_settings, "weights": weights, **summary, **applied,
        "environment": environment(),
    }
    return TrainedRun(model, results, checkpoint)


def subsets(split_table: pd.DataFrame, fraction: float) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    """``(classes, a class id per image, the rows of each subset)``: ``train`` (the
    training fraction's), ``val`` and ``test``."""
    from scripts.data.splits import training_rows

    classes = classes_of(split_table)
    label_ids = split_table["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int32)
    subset = split_table["subset"].to_numpy()
    rows = {"train": training_rows(split_table, fraction), "val": np.flatnonzero(subset == "val"),
            "test": np.flatnonzero(subset == "test")}
    return classes, label_ids, rows


def classes_of(split_table: pd.DataFrame) -> list[str]:
    return sorted(split_table.loc[split_table["split"] == "train", "label"].unique())


def shared_feature_cache(identity, inputs: RunInputs, directory: str, settings: dict,
                         weights_sha256: str | None) -> FeatureCache:
    """The frozen backbone's features of the training pool (the ``train/`` and ``val/``
    images), shared by the pretrained runs through a file in ``directory`` when
    ``frozen_feature_cache`` is on."""
    path = (feature_cache_path(directory, inputs.images_path, identity.model, identity.seed,
                               settings["mixed_precision"], weights_sha256)
            if settings["frozen_feature_cache"] else None)
    return FeatureCache(path, inputs.images, np.flatnonzero(inputs.split["split"].to_numpy() != "test"))


@tracing.traced("training.train")
def train(x_train, y_train, x_val, y_val, *, model_name: str, strategy: str, seed: int,
          n_classes: int, settings: dict, weights: str | None, checkpoint: Checkpoint,
          feature_cache: FeatureCache | None, train_rows: np.ndarray, val_rows: np.ndarray,
          gradcam_min_cells: int, shared: SharedModel, backbone_file: dict | None = None):
    """Fit one run; returns ``(model, inference, history rows, summary dict)``.

    ``backbone_file``: the declaration of ``model_name`` where it is a user's ``.keras``
    file (``backbones:``); ``weights`` is then that file or None (random init).

    ``feature_cache`` (pretrained strategies) holds the pooled features of the training
    pool, one row per image; ``train_rows``/``val_rows`` pick this run's rows from it.
    ``gradcam_min_cells``: chooses the layer the inference pass explains; ``shared``: the model and
    traced functions to reuse (see :class:`SharedModel`).
    """
    import keras

    from scripts.train.models import SCRATCH_BN_MOMENTUM, build_model, trainable_share

    keras.utils.set_random_seed(seed)
    model, backbone, inference = shared.load(
        (model_name, settings["image_size"], n_classes, weights, gradcam_min_cells),
        lambda: build_model(model_name, settings["image_size"], n_classes, weights, dropout=settings["dropout"],
                            bn_momentum=SCRATCH_BN_MOMENTUM, backbone_file=backbone_file),
        gradcam_min_cells, settings["batch_size"], seed_free=weights is not None and strategy in PRETRAINED_STRATEGIES)
    reseed_random_layers(model, epoch_seed(seed, -1))  # the head's dropout before any end-to-end epoch
    weights_by_class = class_weights(y_train, n_classes, settings["class_weight"])
    state = checkpoint.load() or new_state()
    resumed_from = state["epoch"]
    extra = {}
    if feature_cache is not None and not state["history"]:
        features, extraction, reused = feature_cache.load_or_compute(inference)
        extra = fit_head(model, shared, features[train_rows], y_train, features[val_rows], y_val, settings,
                         weights_by_class, head_epochs(strategy, settings), state)
        state["history"][0]["seconds"] += round(extraction, 3)
        extra.update(feature_cache=str(feature_cache.path) if feature_cache.path else None,
                     feature_cache_reused=reused, feature_extraction_seconds=round(extraction, 3))
        if end_to_end_phases(strategy, settings):
            continue_after_warm_up(state)
    trainable = train_end_to_end(model, backbone, inference, x_train, y_train, x_val, y_val, strategy, seed,
                                 settings, weights_by_class, checkpoint, state, resumed_from, shared)
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


@tracing.traced("end-to-end epochs")
def train_end_to_end(model, backbone, inference, x_train, y_train, x_val, y_val, strategy, seed,
                     settings, weights_by_class, checkpoint, state, resumed_from: int, shared: SharedModel) -> dict:
    """Train through the backbone, checkpointing as due, keeping the best epoch's weights;
    returns the trainable parameter counts (of the head alone when nothing trains end to end)."""
    from scripts.train.input_pipeline import augmentation, train_dataset
    from scripts.train.models import SCRATCH_BN_MOMENTUM, count_params, set_trainable

    plan = end_to_end_phases(strategy, settings)
    if not plan:  # linear_probe, frozen on cached features
        set_trainable(model, backbone, "head")
        return count_params(model)
    (phase,) = plan
    resumed = resumed_from > 0
    if resumed:  # an uncompiled model skips the optimizer variables stored in the file
        checkpoint.restore(model, state["epoch"])
    set_trainable(model, backbone, phase.trainable, settings["partial_stages"],
                  bn_momentum=SCRATCH_BN_MOMENTUM)
    shared.compile(model, phase.name, settings[phase.learning_rate_key], settings["xla"])
    if resumed:  # and now Adam's moments too
        checkpoint.restore(model, state["epoch"])
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
        with tracing.phase("keras fit"):
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
            checkpoint.restore(model, state["best_epoch"])
        else:
            model.set_weights(best_weights)
    return count_params(model)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def reseed_random_layers(model, seed: int) -> None:
    """Set every random layer's generator (dropout, EfficientNet's stochastic depth) from
    ``seed``. Their state is not saved with the weights, so a run resumed from a
    checkpoint would otherwise draw other dropout masks than an uninterrupted one."""
    generators = [v for v in model.variables if v.path.endswith("seed_generator_state")]
    for index, state in enumerate(generators):
        state.assign(np.array([(seed * 1_000 + index) % 2**31, 0], dtype=state.dtype))


@tracing.traced("save model weights")
def save_model_weights(model, path: str | Path) -> None:
    """Layer weights only: an uncompiled view of the model has no optimizer to save."""
    import keras

    with fsutil.atomic_path(path) as tmp:
        keras.Model(model.inputs, model.outputs).save_weights(tmp)
