"""Grad-CAM (Selvaraju et al. 2017): the class-discriminative heatmap of one
convolutional layer, and its overlay on the image.

The heatmap of class c weights each feature map A_k by the spatial mean of
d y_c / d A_k, where y_c is the class *score* (the logit, before the softmax), sums
over k and keeps the positive part. The traced pass that computes it for every image
of a run is ``scripts.train.inference.InferencePass``; the layer it explains is
``scripts.train.models.explained_layer``.
"""

from __future__ import annotations

import cv2
import numpy as np


def grad_cam(features, gradients):
    """Heatmaps (batch, H, W) in [0, 1] from a layer's activations and the gradients
    of the explained score with respect to them (both (batch, H, W, K))."""
    import tensorflow as tf

    features = tf.cast(features, tf.float32)
    channel_weights = tf.reduce_mean(tf.cast(gradients, tf.float32), axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(channel_weights * features, axis=-1))
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(cam, peak)


def overlay(image_rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The heatmap upsampled to the image, JET-coloured and blended; RGB uint8."""
    height, width = image_rgb.shape[:2]
    heat = cv2.resize(cam.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    heat = np.uint8(255 * np.clip(heat, 0, 1))
    colour = cv2.cvtColor(cv2.applyColorMap(heat, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image_rgb, 1 - alpha, colour, alpha, 0)
