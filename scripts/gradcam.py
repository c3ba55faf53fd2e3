"""Grad-CAM (Selvaraju et al. 2017) and the one traced inference pass of a run.

Tracing a ``tf.function`` over ResNet50 costs 4-8 s of Python on a small CPU host,
and Keras's own ``predict``/validation each trace again, so every run traces a single
function that returns, per image, the class probabilities, the pooled backbone
features and the Grad-CAM heatmap of the predicted class. It serves validation after
every epoch, feature extraction for the cached frozen strategy and the final test
evaluation. Batches are padded to one shape so the function is traced once.
"""

from __future__ import annotations

import cv2
import numpy as np

from scripts.pipeline import padded_batches


class Inference:
    """``run(images)`` -> dict of ``probabilities``, ``pooled`` and ``cams`` (in [0, 1])."""

    def __init__(self, model, layer_name: str, batch_size: int = 32):
        import keras
        import tensorflow as tf

        self.batch_size = batch_size
        outputs = [model.get_layer(layer_name).output, model.get_layer("head_pool").output, model.output]
        network = keras.Model(model.inputs, outputs)

        @tf.function(reduce_retracing=True)
        def explain(batch):
            with tf.GradientTape() as tape:
                features, pooled, probabilities = network(batch, training=False)
                predicted = tf.argmax(probabilities, axis=1)
                score = tf.gather(probabilities, predicted, axis=1, batch_dims=1)
            grads = tf.cast(tape.gradient(score, features), tf.float32)
            features = tf.cast(features, tf.float32)
            channel_weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
            cam = tf.nn.relu(tf.reduce_sum(channel_weights * features, axis=-1))
            peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
            return tf.math.divide_no_nan(cam, peak), tf.cast(pooled, tf.float32), probabilities

        self._explain = explain

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        import tensorflow as tf

        parts = {"cams": [], "pooled": [], "probabilities": []}
        for batch, real in padded_batches(images, self.batch_size):
            outputs = self._explain(tf.cast(tf.constant(batch), tf.float32))
            for key, value in zip(parts, outputs, strict=True):
                parts[key].append(value.numpy()[:real])
        result = {key: np.concatenate(value) for key, value in parts.items()}
        result["cams"] = result["cams"].astype(np.float16)
        return result


def overlay(image_rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The heatmap upsampled to the image, JET-coloured and blended; RGB uint8."""
    height, width = image_rgb.shape[:2]
    heat = cv2.resize(cam.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    heat = np.uint8(255 * np.clip(heat, 0, 1))
    colour = cv2.cvtColor(cv2.applyColorMap(heat, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image_rgb, 1 - alpha, colour, alpha, 0)
