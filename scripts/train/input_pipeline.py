"""tf.data input pipelines over the decoded image cache (see ``scripts.data.images``).

Images stay ``uint8`` until a batch is gathered; augmentation runs on the batch in
the tf.data graph and on training data only. Each epoch gets its own seed so a run
resumed from a checkpoint sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import os

import numpy as np

from scripts.common import tracing


def _options():
    import tensorflow as tf

    options = tf.data.Options()
    options.deterministic = True
    # Autotuning stalls epochs on small CPU hosts while it tunes; explicit parallelism
    # is as fast there and has no stalls.
    options.autotune.enabled = False
    return options


def augmentation(settings: dict):
    """Random flip/rotation/shift/zoom of a float batch as one ``tf.function(batch, seed)``,
    or None when off.

    Stateless: the result depends only on ``seed`` (epoch seed, batch number), so a run
    resumed mid-training augments exactly as an uninterrupted one. Built once per run
    and traced once: Keras augmentation layers rebuilt every epoch would be traced again
    every epoch. Ranges follow Keras's layers: ``rotation`` is a
    fraction of a full turn, ``shift`` of the image size, ``zoom`` of the scale.
    """
    import math

    import tensorflow as tf

    if not settings.get("enabled", True):
        return None
    flip, rotation = settings.get("flip", False), settings.get("rotation", 0) * 2 * math.pi
    shift, zoom = settings.get("shift", 0), settings.get("zoom", 0)
    if not (flip or rotation or shift or zoom):
        return None

    @tf.function(reduce_retracing=True)
    def augment(batch, seed):
        seeds = tf.random.experimental.stateless_split(seed, 5)
        if flip:
            batch = tf.image.stateless_random_flip_left_right(batch, seeds[0])
        n = tf.shape(batch)[0]
        height, width = tf.cast(tf.shape(batch)[1], tf.float32), tf.cast(tf.shape(batch)[2], tf.float32)

        def uniform(i, limit):
            return tf.random.stateless_uniform([n], seeds[i], -limit, limit)

        angle, scale = uniform(1, rotation), 1.0 + uniform(4, zoom)
        dx, dy = uniform(2, shift) * width, uniform(3, shift) * height
        # Output pixel -> input pixel: rotate and scale about the centre, then shift.
        cx, cy = (width - 1) / 2, (height - 1) / 2
        a0, a1 = tf.cos(angle) * scale, -tf.sin(angle) * scale
        b0, b1 = tf.sin(angle) * scale, tf.cos(angle) * scale
        zeros = tf.zeros_like(angle)
        transforms = tf.stack([a0, a1, cx - a0 * cx - a1 * cy - dx,
                               b0, b1, cy - b0 * cx - b1 * cy - dy, zeros, zeros], axis=1)
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=batch, transforms=transforms, output_shape=tf.shape(batch)[1:3], fill_value=0.0,
            interpolation="BILINEAR", fill_mode="CONSTANT")

    return augment


def epoch_order(n: int, batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded permutation of ``n`` images padded to whole batches, and the mask that
    is 0 on the padding: every image is seen once per epoch, and every batch has one
    shape, so the train step is traced once (a second shape would trace it again, which
    costs a large backbone as much as several batches)."""
    order = np.random.default_rng(seed).permutation(n)
    padded = -(-n // batch_size) * batch_size
    mask = np.zeros(padded, np.float32)
    mask[:n] = 1.0
    return np.resize(order, padded), mask


@tracing.traced("train_dataset")
def train_dataset(images: np.ndarray, labels: np.ndarray, sample_weights: np.ndarray, batch_size: int,
                  seed: int, augment=None):
    """Shuffled batches of ``(float32 image 0..255, int label, sample weight)``: every
    image once per epoch, the last batch padded with weight-0 repeats; augmented by
    ``augment`` (from :func:`augmentation`) with seeds from ``seed`` and the batch number."""
    import tensorflow as tf

    order, mask = epoch_order(len(images), batch_size, seed)
    images_t, labels_t = tf.constant(images), tf.constant(labels)
    weights_t = tf.constant(np.asarray(sample_weights, np.float32))

    def gather(batch_number, batch):
        indices, batch_mask = batch
        pixels = tf.cast(tf.gather(images_t, indices), tf.float32)
        if augment is not None:
            pixels = augment(pixels, tf.stack([tf.constant(seed, tf.int64), batch_number]))
        return pixels, tf.gather(labels_t, indices), tf.gather(weights_t, indices) * batch_mask

    batches = (order.reshape(-1, batch_size), mask.reshape(-1, batch_size))
    return (
        tf.data.Dataset.from_tensor_slices(batches)
        .enumerate()
        .map(gather, num_parallel_calls=len(os.sched_getaffinity(0)))  # the CPUs this job may use
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
