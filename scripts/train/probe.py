"""The new head fitted on the frozen backbone's features, before anything trains end to
end: the shared feature cache, the linear probe (a logistic regression whose L2 strength
is chosen on validation, Kornblith et al. 2019) written into the head, and Adam epochs
of the head on the cached features that keep the best validation loss."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from scripts.common import fsutil, tracing
from scripts.train.checkpoint import EarlyStopping, fingerprint
from scripts.train.objective import weighted_scores

PROBE_C = tuple(10.0 ** np.arange(-4, 3))  # logistic-regression inverse L2 strengths tried


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

    @tracing.traced("feature cache: extract or load")
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


def feature_cache_path(directory: str | Path, images_path: str | Path, model: str, seed: int,
                       precision: str, weights_sha256: str | None) -> Path:
    """The frozen backbone's shared feature cache, keyed by what the features depend on:
    the decoded images, the backbone and its weights (or, for random init, the seed,
    which draws them) and the precision."""
    stat = Path(images_path).stat()
    backbone = weights_sha256 or f"random init, seed {seed}"
    key = fingerprint(images=[Path(images_path).name, stat.st_size, stat.st_mtime_ns], model=model,
                      backbone=backbone, precision=precision)
    return Path(directory) / f"{model}-{Path(images_path).stem}-{key[:16]}.npy"


@tracing.traced("linear probe + head epochs on cached features")
def fit_head(model, shared, train_features, y_train, val_features, y_val, settings, weights_by_class,
             epochs: int, state: dict) -> dict:
    """Standardise the features in the head, fit the linear probe into it, then train
    the head ``epochs`` more epochs with Adam and dropout, keeping the weights with the
    best validation loss (the probe's included). Fills ``state``'s history; ``shared``
    (:class:`scripts.train.training.SharedModel`) makes and compiles the head."""
    import keras

    from scripts.train.models import set_feature_statistics

    started = time.perf_counter()
    mean, scale = feature_statistics(train_features)
    set_feature_statistics(model, mean, scale**2)
    z_train, z_val = (train_features - mean) / scale, (val_features - mean) / scale
    n_classes = len(weights_by_class)
    kernel, bias, c, grid = linear_probe(z_train, y_train, z_val, y_val, n_classes, weights_by_class,
                                         settings["class_weight"])
    model.get_layer("logits").set_weights([kernel, bias])
    head = shared.head(model)
    shared.compile(head, "head", settings["learning_rate"], settings["xla"])
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
        with tracing.phase("keras fit"):
            head.fit(train_features, y_train, sample_weight=sample_weights, batch_size=settings["batch_size"],
                     epochs=epochs, shuffle=True, verbose=0,
                     validation_data=(val_features, y_val, weights_by_class[y_val].astype(np.float32)),
                     callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)])
        head.set_weights(best_weights)
    return {"probe_C": c, "probe_grid": grid}


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
    if len(probe.classes_) == 2:
        # one decision z for classes_[1], split as logits [-z/2, z/2]: softmax of them is
        # sigmoid(z) as with [0, z], and both logits carry the signal, so Grad-CAM of either
        # class has a gradient (a zero logit gives an all-zero map for that class)
        negative, positive = probe.classes_
        kernel[:, positive], bias[positive] = probe.coef_[0] / 2, probe.intercept_[0] / 2
        kernel[:, negative], bias[negative] = -probe.coef_[0] / 2, -probe.intercept_[0] / 2
    else:
        kernel[:, probe.classes_], bias[probe.classes_] = probe.coef_.T, probe.intercept_
    return kernel, bias, c, rows


def head_model(model):
    """The new head alone (pooled features in), sharing its layers with ``model``."""
    import keras

    pooled = keras.Input(model.get_layer("head_pool").output.shape[1:], name="pooled_features")
    x = model.get_layer("head_norm")(pooled)
    x = model.get_layer("head_dropout")(x)
    return keras.Model(pooled, model.get_layer("predictions")(model.get_layer("logits")(x)))
