"""Model construction, stages and trainability, the layer Grad-CAM explains, and Grad-CAM
against a hand derivation (the full backbones' ImageNet graphs and a trained CNN's
Grad-CAM: tests/model/)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from scripts.train.models import (
    BACKBONES,
    MODELS,
    build_model,
    explained_layer,
    feature_map_cells,
    last_conv_layer,
    set_feature_statistics,
    set_trainable,
    top_stage_layers,
    trainable_share,
)

keras = pytest.importorskip("keras")
HEAD = {"dropout": 0.3, "bn_momentum": 0.7}  # any valid head settings: these tests are about the backbone


@functools.cache
def built_at_32_px(name: str):
    """``build_model(name, 32 px, 2 classes)``, built once for the tests that only read it."""
    return build_model(name, 32, 2, None, **HEAD)


@pytest.mark.parametrize("name", ["scratch_cnn", *BACKBONES])
def test_models_are_flat_with_reachable_last_conv(name):
    model, backbone = built_at_32_px(name)
    assert model.output.shape == (None, 2)
    assert model.get_layer(last_conv_layer(name)).output.shape[-1] > 1
    assert all(not isinstance(layer, keras.Model) for layer in model.layers)  # nothing nested
    assert bool(backbone) == (name != "scratch_cnn")
    assert [layer.name for layer in model.layers[-5:]] == [
        "head_pool", "head_norm", "head_dropout", "logits", "predictions"]


def test_a_missing_weights_file_is_named(tmp_path):
    from scripts.weights.weight_files import WeightsError

    with pytest.raises(WeightsError, match="nothing_notop.h5 does not exist"):
        build_model("vgg16", 32, 2, tmp_path / "nothing_notop.h5", **HEAD)


# --- the layer Grad-CAM explains ---

@pytest.mark.parametrize("name", MODELS)
def test_feature_map_cells_are_those_of_the_built_graph(name):
    """Fails if a feature map's name is not a layer of the model, or its halvings round
    differently from Keras's layers at the sizes these tests and the demo use."""
    for image_size in (32, 64, 224):
        model, _ = built_at_32_px(name) if image_size == 32 else build_model(name, image_size, 2, None, **HEAD)
        built = [(layer, model.get_layer(layer).output.shape[1]) for layer, _ in feature_map_cells(name, image_size)]
        assert feature_map_cells(name, image_size) == built
        assert [model.get_layer(layer).output.shape[2] for layer, _ in built] == [cells for _, cells in built]


def test_feature_map_cells_by_hand():
    """Odd sizes on the way down (100 px), as the built graphs have them."""
    assert [cells for _, cells in feature_map_cells("vgg16", 100)] == [100, 50, 25, 12, 6]  # 2x2 pools drop a cell
    assert feature_map_cells("resnet50", 100) == [  # padded stride 2 keeps it
        ("conv1_relu", 50), ("conv2_block3_out", 25), ("conv3_block4_out", 13), ("conv4_block6_out", 7),
        ("conv5_block3_out", 4)]
    assert [cells for _, cells in feature_map_cells("densenet121", 100)] == [50, 25, 12, 6, 3]
    assert [cells for _, cells in feature_map_cells("scratch_cnn", 64)] == [64, 32, 16, 8]


def test_explained_layer_is_the_deepest_with_enough_cells():
    at_64 = {name: explained_layer(name, 64, 7) for name in MODELS}
    assert at_64 == {"scratch_cnn": ("block4_relu", 8), "vgg16": ("block4_conv3", 8),
                     "resnet50": ("conv3_block4_out", 8), "efficientnetb0": ("block3b_add", 8),
                     "densenet121": ("pool3_conv", 8)}
    assert all(explained_layer(name, 224, 7) == (last_conv_layer(name), 14 if name == "vgg16" else 7)
               for name in BACKBONES)
    assert explained_layer("scratch_cnn", 224, 7) == ("block4_relu", 28)  # the scratch CNN's own last conv
    assert explained_layer("resnet50", 64, 8) == ("conv3_block4_out", 8)  # at least, not more than
    assert explained_layer("resnet50", 64, 9) == ("conv2_block3_out", 16)
    assert explained_layer("resnet50", 64, 1) == ("conv5_block3_out", 2)
    assert explained_layer("vgg16", 32, 7) == ("block3_conv3", 8)


def test_without_a_layer_of_enough_cells_the_one_with_the_most():
    assert explained_layer("vgg16", 32, 100) == ("block1_conv2", 32)
    assert explained_layer("resnet50", 32, 100) == ("conv1_relu", 16)
    # EfficientNetB0's stem and block1 are both 16 x 16 at 32 px: the deeper one
    assert explained_layer("efficientnetb0", 32, 100) == ("block1a_project_bn", 16)


# --- 3. stages ---

@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_layer_has_one_stage_in_layer_order(name):
    spec = BACKBONES[name]
    _, backbone = built_at_32_px(name)
    stages = [spec.stage_of(layer) for layer in backbone]  # raises unless exactly one stage matches
    order = [spec.stage_names.index(stage) for stage in stages]
    assert order == sorted(order)  # stages follow each other in layer order...
    assert sorted(set(order)) == list(range(len(spec.stages)))  # ...and none is empty


def test_stage_boundaries_by_hand():
    layers = {name: built_at_32_px(name)[1] for name in BACKBONES}
    assert top_stage_layers("vgg16", layers["vgg16"], 1) == [
        "block5_conv1", "block5_conv2", "block5_conv3", "block5_pool"]
    resnet_conv1 = [n for n in layers["resnet50"] if BACKBONES["resnet50"].stage_of(n) == "conv1"]
    assert resnet_conv1 == ["conv1_pad", "conv1_conv", "conv1_bn", "conv1_relu", "pool1_pad", "pool1_pool"]
    assert top_stage_layers("efficientnetb0", layers["efficientnetb0"], 1) == [
        "top_conv", "top_bn", "top_activation"]
    densenet_conv5 = top_stage_layers("densenet121", layers["densenet121"], 1)
    assert densenet_conv5[0] == "conv5_block1_0_bn" and densenet_conv5[-2:] == ["bn", "relu"]
    assert "pool4_conv" in top_stage_layers("densenet121", layers["densenet121"], 2)  # transition 4
    with pytest.raises(ValueError, match="block1, block2, block3, block4, block5"):
        top_stage_layers("vgg16", layers["vgg16"], 6)
    with pytest.raises(ValueError, match="last 0"):
        top_stage_layers("vgg16", layers["vgg16"], 0)


def trainable_names(model):
    return {layer.name for layer in model.layers if layer.trainable_weights}


def test_trainability_per_phase_and_share():
    model, backbone = build_model("resnet50", 32, 2, None, **HEAD)
    batchnorm = {layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}

    set_trainable(model, backbone, "head")
    assert trainable_names(model) == {"logits"}
    assert trainable_share(model, backbone) == 0

    set_trainable(model, backbone, "top", stages=1)
    conv5 = {n for n in backbone if n.startswith("conv5_") and model.get_layer(n).weights}
    assert trainable_names(model) == {"logits"} | (conv5 - batchnorm)
    # By hand: conv5 convolutions (kernels + biases) over ResNet50's 23,587,712 variables.
    block1 = (1024 * 512 + 512) + (9 * 512 * 512 + 512) + (512 * 2048 + 2048) + (1024 * 2048 + 2048)
    block2 = (2048 * 512 + 512) + (9 * 512 * 512 + 512) + (512 * 2048 + 2048)
    assert trainable_share(model, backbone) == pytest.approx((block1 + 2 * block2) / 23_587_712)

    set_trainable(model, backbone, "backbone")
    assert trainable_names(model) & batchnorm == set()  # BatchNorm stays in inference mode
    assert "conv1_conv" in trainable_names(model)

    set_trainable(model, backbone, "all")
    assert batchnorm <= trainable_names(model)
    assert trainable_share(model, backbone) == pytest.approx(23_534_592 / 23_587_712)  # all but BN statistics


def test_vgg16_last_stage_share_by_hand():
    model, backbone = build_model("vgg16", 32, 2, None, **HEAD)
    set_trainable(model, backbone, "top", stages=1)
    assert trainable_share(model, backbone) == pytest.approx(3 * (9 * 512 * 512 + 512) / 14_714_688)


# --- 2. Grad-CAM on the class logit ---

def test_inference_pass_matches_the_closed_form_through_standardised_features():
    """d logit_c / d A_k(i, j) = kernel[k, c] / (std_k * H * W) through GAP, the head's
    standardisation and Dense. Fails if the CAM explains the softmax probability, if
    the standardisation is left out of the graph, or if statistics set after the pass
    was traced are ignored (Keras's own Normalization keeps them as constants)."""
    from scripts.train.inference import InferencePass

    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(0)
    model, _ = build_model("scratch_cnn", 32, 3, None, **HEAD)
    images = rng.integers(0, 255, (5, 32, 32, 3)).astype(np.uint8)
    inference = InferencePass(model, last_conv_layer("scratch_cnn"), batch_size=4)
    inference.run(images, cams=True)  # both passes traced with the identity statistics
    inference.run(images)
    mean, variance = rng.normal(0, 0.2, 256), rng.uniform(0.01, 4.0, 256)
    set_feature_statistics(model, mean, variance)
    result = inference.run(images, cams=True)
    forward = inference.run(images)  # the pass without Grad-CAM gives the same outputs
    assert "cams" not in forward
    for key in ("probabilities", "logits", "pooled"):
        np.testing.assert_allclose(forward[key], result[key], rtol=1e-5, atol=1e-6)

    features = keras.Model(model.inputs[0], model.get_layer("block4_relu").output)(images.astype("float32"))
    features = features.numpy()
    kernel, bias = (w.numpy() for w in model.get_layer("logits").weights)
    std, area = np.sqrt(variance), features.shape[1] * features.shape[2]
    pooled = features.mean(axis=(1, 2))
    logits = ((pooled - mean) / std) @ kernel + bias
    np.testing.assert_allclose(result["pooled"], pooled, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result["logits"], logits, rtol=1e-4, atol=1e-4)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(result["probabilities"], probs / probs.sum(1, keepdims=True), atol=1e-5)
    largest_gap = 0.0
    for i in range(len(images)):
        c = logits[i].argmax()
        cam = normalised(np.maximum((features[i] * kernel[:, c] / (std * area)).sum(-1), 0))
        np.testing.assert_allclose(result["cams"][i].astype(float), cam, atol=2e-3)
        p = result["probabilities"][i]
        of_probability = kernel @ (p[c] * ((np.arange(3) == c) - p)) / (std * area)  # softmax Jacobian
        cam_of_probability = normalised(np.maximum(features[i] @ of_probability, 0))
        largest_gap = max(largest_gap, np.abs(cam_of_probability - cam).max())
    assert largest_gap > 0.05  # the closed form tells the logit's map from the probability's
    assert result["pooled"].shape == (5, 256)


def normalised(cam):
    return cam / cam.max() if cam.max() > 0 else cam
