"""tf.data input pipelines over the decoded image cache (see ``scripts.images``).

Images stay ``uint8`` until a batch is gathered; augmentation runs on the batch in
the tf.data graph and on training data only. Each epoch gets its own seed so a run
resumed from a checkpoint sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import os

import numpy as np


def _options():
    import tensorflow as tf

    options = tf.data.Options()
    options.deterministic = True
    # Autotuning stalled epochs for 1-21 s on small CPU hosts (its tuning ticks);
    # explicit parallelism is as fast here and has no stalls.
    options.autotune.enabled = False
    return options


def augmentation(settings: dict, seed: int):
    """Random flip/rotation/shift/zoom as one Keras model, seeded; None when off."""
    import keras

    if not settings.get("enabled", True):
        return None
    layers = []
    if settings.get("flip", False):
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if settings.get("rotation", 0):
        layers.append(keras.layers.RandomRotation(settings["rotation"], fill_mode="constant", seed=seed + 1))
    if settings.get("shift", 0):
        shift = settings["shift"]
        layers.append(keras.layers.RandomTranslation(shift, shift, fill_mode="constant", seed=seed + 2))
    if settings.get("zoom", 0):
        layers.append(keras.layers.RandomZoom(settings["zoom"], fill_mode="constant", seed=seed + 3))
    return keras.Sequential(layers, name="augmentation") if layers else None


def train_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int,
                  augment_settings: dict):
    """Shuffled, augmented batches of ``(float32 image 0..255, int label)``."""
    import tensorflow as tf

    augment = augmentation(augment_settings, seed)
    images_t, labels_t = tf.constant(images), tf.constant(labels)

    def gather(indices):
        batch = tf.cast(tf.gather(images_t, indices), tf.float32)
        if augment is not None:
            batch = augment(batch, training=True)
        return batch, tf.gather(labels_t, indices)

    # Dropping the last partial batch keeps one batch shape: a second shape retraces
    # the train step (27 s for ResNet50 on a 2-core CPU). Reshuffling each epoch still
    # shows every image; tiny datasets keep it so that there is at least one batch.
    return (
        tf.data.Dataset.range(len(images))
        .shuffle(len(images), seed=seed)
        .batch(batch_size, drop_remainder=len(images) > batch_size)
        .map(gather, num_parallel_calls=os.cpu_count())
        .prefetch(2)
        .with_options(_options())
    )


def padded_batches(images: np.ndarray, batch_size: int):
    """``(batch, n_real)`` pairs of fixed shape: the last batch is padded by repeating
    its first image, so a ``tf.function`` over them is traced once."""
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start : start + batch_size])
        real = len(batch)
        if real < batch_size:
            batch = np.concatenate([batch, np.repeat(batch[:1], batch_size - real, axis=0)])
        yield batch, real
