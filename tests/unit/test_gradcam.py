"""Grad-CAM by hand: the heatmap of given activations and gradients, the heatmap of a
hand-set model whose class is decided by one region, and the overlay's colours."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import region_images, region_model

from scripts.train.gradcam import grad_cam, overlay

pytest.importorskip("tensorflow")


def test_grad_cam_weights_each_channel_by_its_mean_gradient():
    """Image 0: channel weights (2, -1) give relu(2 A0 - A1) = [[2, 0], [0, 4]], halved by its
    peak. Fails if the gradients weighted each pixel (that gives [[1, 0], [0, 4]] / 4), if the
    positive part or the peak normalisation were left out. Image 1: every cell is negative,
    so the map is 0, not NaN."""
    features = np.zeros((2, 2, 2, 2))
    features[0, ..., 0], features[0, ..., 1] = [[1, 0], [0, 2]], [[0, 3], [1, 0]]
    features[1] = 1.0
    gradients = np.zeros((2, 2, 2, 2))
    gradients[0, ..., 0], gradients[0, ..., 1] = [[1, 3], [2, 2]], -1.0
    gradients[1] = -1.0
    cams = grad_cam(features, gradients).numpy()
    np.testing.assert_allclose(cams[0], [[0.5, 0], [0, 1]])
    np.testing.assert_array_equal(cams[1], np.zeros((2, 2)))


def explain(model, images: np.ndarray, explained_class: int) -> np.ndarray:
    """Grad-CAM of ``explained_class``'s logit at the model's ``features`` layer."""
    import keras
    import tensorflow as tf

    network = keras.Model(model.inputs, [model.get_layer("features").output, model.get_layer("logits").output])
    with tf.GradientTape() as tape:
        features, logits = network(tf.constant(images, tf.float32))
        score = tf.reduce_sum(logits[:, explained_class])
    return grad_cam(features, tape.gradient(score, features)).numpy()


def test_grad_cam_of_a_model_decided_by_one_region_is_that_regions_bright_patch():
    """The region model's class-1 logit is the mean brightness above 100 inside its top-left
    square: its map is exactly the patch there. The patch outside that square raises
    nothing (all-zero map); the class-0 logit grows with the grey level everywhere, so its
    map is the grey image over its peak."""
    model = region_model()
    images, mask = region_images()
    np.testing.assert_array_equal(model.predict(images.astype("float32"), verbose=0).argmax(1), [1, 0, 0])
    of_patch = explain(model, images, 1)
    np.testing.assert_allclose(of_patch[0], mask, atol=1e-6)
    np.testing.assert_array_equal(of_patch[1], np.zeros((8, 8)))
    of_grey = explain(model, images, 0)
    np.testing.assert_allclose(of_grey[1], images[1, ..., 0] / 200, atol=1e-6)
    np.testing.assert_allclose(of_grey[2], np.ones((8, 8)), atol=1e-6)  # uniform grey: a uniform map


def test_overlay_is_the_jet_colour_blended_with_the_image():
    """OpenCV's JET maps 1 to RGB (128, 0, 0) and 0 to (0, 0, 128); the blend is
    (1 - alpha) · image + alpha · colour."""
    image = np.full((16, 16, 3), 100, np.uint8)
    left_hot = np.zeros((4, 4))
    left_hot[:, :2] = 1.0
    coloured = overlay(image, left_hot, alpha=1.0)
    assert coloured.shape == (16, 16, 3) and coloured.dtype == np.uint8
    np.testing.assert_array_equal(coloured[:, 0], np.tile([128, 0, 0], (16, 1)))  # hot: red (RGB order)
    np.testing.assert_array_equal(coloured[:, 15], np.tile([0, 0, 128], (16, 1)))  # cold: blue
    np.testing.assert_array_equal(overlay(image, np.ones((2, 2)), alpha=0.5), np.tile([114, 50, 50], (16, 16, 1)))
    np.testing.assert_array_equal(overlay(image, left_hot, alpha=0.0), image)
