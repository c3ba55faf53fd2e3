"""The linear probe written into the head: the same probabilities as scikit-learn's
logistic regression, with every class's logit carrying the signal."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from scripts.train.probe import linear_probe


def separable(n: int, seed: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    features = rng.normal(0, 1, (n, 5))
    features[:, 0] += 1.5 * labels
    return features, labels


@pytest.mark.parametrize("classes", [2, 3])
def test_every_logit_carries_the_signal_and_the_softmax_is_the_probes(classes):
    """Fails for two classes if one logit stayed zero: Grad-CAM of that class is then an
    all-zero map on every image and the shortcut score sees only the other class."""
    from sklearn.linear_model import LogisticRegression

    x_train, y_train = separable(60, 1, classes)
    x_val, y_val = separable(30, 2, classes)
    weights = np.ones(classes)
    kernel, bias, c, _ = linear_probe(x_train, y_train, x_val, y_val, classes, weights, "none")
    assert (np.abs(kernel).sum(axis=0) > 0).all()  # no class left without a gradient
    expected = LogisticRegression(C=c, max_iter=5000).fit(x_train, y_train).predict_proba(x_val)
    assert special.softmax(x_val @ kernel + bias, axis=1) == pytest.approx(expected, abs=1e-6)
    if classes == 2:  # the two logits are the decision split evenly: z/2 and -z/2
        assert kernel[:, 0] == pytest.approx(-kernel[:, 1]) and bias[0] == pytest.approx(-bias[1])


def two_region_model(size: int = 8):
    """A hand-set Keras classifier of ``size`` px RGB images with the layer names the
    inference pass reads: ``features`` channel 0 is ``relu(grey - BRIGHT)`` inside the
    top-left ``REGION`` px square, channel 1 the same outside it; the ``logits`` are left
    for the probe to fill."""
    import keras
    from conftest import BRIGHT, REGION

    inputs = keras.Input((size, size, 3))
    conv = keras.layers.Conv2D(2, 1, name="conv")
    mask = np.zeros((1, size, size, 2), np.float32)
    mask[0, :REGION, :REGION, 0] = 1.0
    mask[..., 1] = 1.0 - mask[..., 0]
    features = keras.layers.Lambda(lambda x: keras.ops.relu(x) * mask, name="features")(conv(inputs))
    pooled = keras.layers.GlobalAveragePooling2D(name="head_pool")(features)
    logits = keras.layers.Dense(2, name="logits")(pooled)
    model = keras.Model(inputs, keras.layers.Softmax(name="predictions")(logits))
    conv.set_weights([np.full((1, 1, 3, 2), 1 / 3, np.float32), np.full(2, -BRIGHT, np.float32)])
    return model


def test_grad_cam_of_a_probed_head_has_a_map_for_either_predicted_class():
    """The probe written into a small Keras model whose classes each have their own
    evidence (class 1: a bright pixel inside the top-left square, class 0: one outside it):
    every image gets a map with mass, whichever class it is predicted as. With one logit
    left at zero, the images predicted as that class get all-zero maps (the shortcut score
    then drops them and the mean-map panels are blank)."""
    pytest.importorskip("tensorflow")
    from conftest import REGION

    from scripts.train.inference import InferencePass

    rng = np.random.default_rng(3)
    images = rng.integers(40, 80, (40, 8, 8, 3)).astype(np.uint8)
    labels = np.arange(40) % 2
    for i in range(40):
        row, column = rng.integers(0, REGION, 2)
        if labels[i]:
            images[i, row, column] = 250
        else:
            images[i, 7 - row // 2, 7 - column // 2] = 250
    model = two_region_model()
    inference = InferencePass(model, "features", batch_size=16)
    pooled = inference.run(images)["pooled"]
    kernel, bias, _, _ = linear_probe(pooled[:30], labels[:30], pooled[30:], labels[30:], 2, np.ones(2), "none")
    model.get_layer("logits").set_weights([kernel, bias])
    result = inference.run(images, cams=True)
    predicted = result["probabilities"].argmax(1)
    assert (predicted == labels).all()
    mass = np.asarray(result["cams"], dtype=float).sum(axis=(1, 2))
    assert (mass > 0).all(), f"all-zero maps for predicted classes {sorted(set(predicted[mass == 0]))}"
