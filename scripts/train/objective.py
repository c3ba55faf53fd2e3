"""What every phase of training minimises and how it is scored: class-weighted
cross-entropy and accuracy (``class_weight: balanced``: every class counts equally), in
training *and* validation, so the curves are comparable and early stopping watches what
the optimiser minimises."""

from __future__ import annotations

import numpy as np


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


def compile_model(model, learning_rate: float, xla: str | bool) -> None:
    """Adam on the sparse cross-entropy, weighted by the sample weights the data carry."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        weighted_metrics=["accuracy"],
        jit_compile=xla,
    )
