"""Model construction, trainability per strategy, and Grad-CAM against a hand derivation."""

from __future__ import annotations

import numpy as np
import pytest

from scripts.models import BACKBONES, build_model, last_conv_layer, set_trainable

keras = pytest.importorskip("keras")


@pytest.mark.parametrize("name", ["scratch_cnn", *BACKBONES])
def test_models_are_flat_with_reachable_last_conv(name):
    model, backbone = build_model(name, 32, 3)
    assert model.output.shape == (None, 3)
    assert model.get_layer(last_conv_layer(name)).output.shape[-1] > 1
    assert all(not isinstance(layer, keras.Model) for layer in model.layers)  # nothing nested
    assert bool(backbone) == (name != "scratch_cnn")


def trainable_names(model):
    return {layer.name for layer in model.layers if layer.trainable and layer.weights}


def test_trainability_per_phase():
    model, backbone = build_model("resnet50", 32, 2)
    batchnorm = {layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}

    set_trainable(model, backbone, "head")
    assert trainable_names(model) == {"predictions"}

    set_trainable(model, backbone, "top", top_layers=10)
    top = set(backbone[-10:])
    with_weights = {n for n in top - batchnorm if model.get_layer(n).weights}
    assert trainable_names(model) == {"predictions"} | with_weights

    set_trainable(model, backbone, "backbone")
    assert trainable_names(model) & batchnorm == set()  # BatchNorm stays in inference mode
    assert "conv1_conv" in trainable_names(model)

    set_trainable(model, backbone, "all")
    assert batchnorm <= trainable_names(model)


def test_gradcam_matches_the_closed_form_for_a_pooled_softmax_head():
    from scripts.gradcam import Inference

    keras.utils.set_random_seed(3)
    model, _ = build_model("scratch_cnn", 32, 3)
    images = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3)).astype(np.uint8)
    result = Inference(model, last_conv_layer("scratch_cnn"), batch_size=4).run(images)

    feature_model = keras.Model(model.inputs[0], model.get_layer("block4_relu").output)
    features = feature_model(images.astype("float32")).numpy()
    kernel = model.get_layer("predictions").kernel.numpy()
    probs = result["probabilities"]
    for i in range(len(images)):
        c = probs[i].argmax()
        dp_dz = probs[i, c] * ((np.arange(3) == c) - probs[i])  # softmax Jacobian row
        alpha = kernel @ dp_dz / (features.shape[1] * features.shape[2])  # mean gradient per channel
        cam = np.maximum((features[i] * alpha).sum(-1), 0)
        cam = cam / cam.max() if cam.max() > 0 else cam
        np.testing.assert_allclose(result["cams"][i].astype(float), cam, atol=2e-3)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    assert result["pooled"].shape == (5, 256)
