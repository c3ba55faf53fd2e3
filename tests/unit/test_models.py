"""Model construction, stages and trainability, the layer Grad-CAM explains, and Grad-CAM
against a hand derivation (the full backbones' ImageNet graphs and a trained CNN's
Grad-CAM: tests/model/)."""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest

from scripts.train.models import (
    MODELS,
    build_model,
    explained_layer,
    feature_map_cells,
    set_feature_statistics,
    set_trainable,
    stages,
    top_stage_layers,
    trainable_share,
)

keras = pytest.importorskip("keras")
HEAD = {"dropout": 0.3, "bn_momentum": 0.7}  # any valid head settings: these tests are about the backbone
# The backbones whose stages and Grad-CAM layers were once written by hand.
BACKBONES = ["vgg16", "resnet50", "efficientnetb0", "densenet121"]


@functools.cache
def built(name: str, image_size: int = 32):
    """``build_model(name, image_size, 2 classes)``, built once for the tests that only read it."""
    return build_model(name, image_size, 2, None, **HEAD)


def last_conv_layer(name: str) -> str:
    return stages(built(name)[0])[-1].output


@pytest.mark.parametrize("name", ["scratch_cnn", *BACKBONES])
def test_models_are_flat_with_reachable_last_conv(name):
    model, backbone = built(name)
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

def cells(name: str, image_size: int) -> list[tuple[str, int]]:
    return feature_map_cells(built(name, image_size)[0])


def test_feature_map_cells_by_hand():
    """Odd sizes on the way down (100 px), as the built graphs have them."""
    assert cells("vgg16", 100) == [("block1_conv2", 100), ("block2_conv2", 50), ("block3_conv3", 25),
                                   ("block4_conv3", 12), ("block5_conv3", 6)]  # 2x2 pools drop a cell
    assert cells("resnet50", 100) == [  # padded stride 2 keeps it
        ("conv1_relu", 50), ("conv2_block3_out", 25), ("conv3_block4_out", 13), ("conv4_block6_out", 7),
        ("conv5_block3_out", 4)]
    assert [n for _, n in cells("densenet121", 100)] == [50, 25, 12, 6, 3]
    assert cells("scratch_cnn", 64) == [("block1_relu", 64), ("block2_relu", 32), ("block3_relu", 16),
                                        ("block4_relu", 8)]


def test_explained_layer_is_the_deepest_with_enough_cells():
    at_64 = {name: explained_layer(built(name, 64)[0], 7) for name in MODELS if name in ["scratch_cnn", *BACKBONES]}
    assert at_64 == {"scratch_cnn": ("block4_relu", 8), "vgg16": ("block4_conv3", 8),
                     "resnet50": ("conv3_block4_out", 8), "efficientnetb0": ("block4a_expand_activation", 8),
                     "densenet121": ("pool3_conv", 8)}
    resnet = built("resnet50", 64)[0]
    assert explained_layer(resnet, 8) == ("conv3_block4_out", 8)  # at least, not more than
    assert explained_layer(resnet, 9) == ("conv2_block3_out", 16)
    assert explained_layer(resnet, 1) == ("conv5_block3_out", 2)
    assert explained_layer(built("vgg16")[0], 7) == ("block3_conv3", 8)


def test_without_a_layer_of_enough_cells_the_one_with_the_most():
    assert explained_layer(built("vgg16")[0], 100) == ("block1_conv2", 32)
    assert explained_layer(built("resnet50")[0], 100) == ("conv1_relu", 16)


# --- 3. stages, derived from the graph ---

@pytest.mark.parametrize("name", ["scratch_cnn", *BACKBONES])
def test_stages_cover_the_network_once_in_layer_order(name):
    model, backbone = built(name)
    found = stages(model)
    network = [layer.name for layer in model.layers[1:model.layers.index(model.get_layer("head_pool"))]]
    assert [layer for stage in found for layer in stage.layers] == network
    assert all(any(model.get_layer(n).trainable_weights for n in stage.layers) for stage in found)
    set_trainable(model, backbone, "head")  # frozen layers have no trainable_weights: the same stages
    assert stages(model) == found
    set_trainable(model, backbone, "all")
    assert all(stage.output in stage.layers for stage in found)


# The hand-written tables the derivation replaced: (stage, regular expression over layer
# names) and the feature maps (stage outputs) Grad-CAM could explain.
TABLES = {
    "vgg16": ([(f"block{i}", rf"block{i}_(conv\d|pool)") for i in range(1, 6)],
              ["block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"]),
    "resnet50": ([("conv1", r"conv1_(pad|conv|bn|relu)|pool1_(pad|pool)"),
                  *((f"conv{i}", rf"conv{i}_block\d+_\w+") for i in range(2, 6))],
                 ["conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"]),
    "efficientnetb0": ([("stem", r"(rescaling|normalization)(_\d+)?|stem_\w+"),
                        *((f"block{i}", rf"block{i}[a-z]_\w+") for i in range(1, 8)), ("top", r"top_\w+")],
                       ["stem_activation", "block1a_project_bn", "block2b_add", "block3b_add", "block4c_add",
                        "block5c_add", "block6d_add", "block7a_project_bn", "top_activation"]),
    "densenet121": ([("conv1", r"zero_padding2d(_\d+)?|conv1_\w+|pool1"),
                     *((f"conv{i}", rf"conv{i}_block\d+_\w+|pool{i}_\w+") for i in range(2, 5)),
                     ("conv5", r"conv5_block\d+_\w+|bn|relu")],
                    ["conv1_relu", "pool2_conv", "pool3_conv", "pool4_conv", "relu"]),
}


def table_stages(name: str, backbone: list[str]) -> list[tuple[str, ...]]:
    patterns, _ = TABLES[name]
    grouped: dict[str, list[str]] = {}
    for layer in backbone:
        (stage,) = [stage for stage, pattern in patterns if re.fullmatch(pattern, layer)]
        grouped.setdefault(stage, []).append(layer)
    return [tuple(layers) for layers in grouped.values()]


@pytest.mark.parametrize("name", ["vgg16", "resnet50", "densenet121"])
def test_derived_stages_are_the_hand_written_tables(name):
    """VGG16, ResNet50 and DenseNet121 downsample exactly where their named blocks change."""
    model, backbone = built(name)
    found = stages(model)
    assert [stage.layers for stage in found] == table_stages(name, backbone)
    assert [stage.output for stage in found] == TABLES[name][1]


def test_efficientnet_stages_end_at_its_downsamplings_where_the_table_had_its_blocks():
    """The table had a stage per MBConv group (block1..block7) and the stem and top. Derived:
    a stage per resolution. block1 (stride 1) joins the stem, block5 (stride 1) block4,
    block7 and the 1x1 top conv block6. Each strided group's expand conv (its 1x1 conv)
    comes before its strided depthwise conv, so it ends the stage before, and that stage's
    output is the expand activation where the table had the previous group's last block
    output: the same resolution, one 1x1 conv deeper."""
    model, backbone = built("efficientnetb0")
    found = stages(model)
    starts = [stage.layers[0] for stage in found]
    # the input scaling's name is Keras's auto-numbered one ("rescaling_3" after other builds)
    assert re.fullmatch(r"rescaling(_\d+)?", starts[0])
    assert starts[1:] == ["block2a_dwconv_pad", "block3a_dwconv_pad", "block4a_dwconv_pad", "block6a_dwconv_pad"]
    assert [stage.output for stage in found] == ["block2a_expand_activation", "block3a_expand_activation",
                                                 "block4a_expand_activation", "block6a_expand_activation",
                                                 "top_activation"]
    table = table_stages("efficientnetb0", backbone)
    assert found[-1].layers == ("block6a_dwconv_pad", *table[6][table[6].index("block6a_dwconv_pad") + 1:],
                                *table[7], *table[8])
    assert top_stage_layers(model, backbone, 1)[-3:] == ["top_conv", "top_bn", "top_activation"]


def test_stage_boundaries_by_hand():
    model, backbone = built("vgg16")
    assert top_stage_layers(model, backbone, 1) == ["block5_conv1", "block5_conv2", "block5_conv3", "block5_pool"]
    resnet, resnet_layers = built("resnet50")
    assert stages(resnet)[0].layers == ("conv1_pad", "conv1_conv", "conv1_bn", "conv1_relu", "pool1_pad",
                                        "pool1_pool")
    densenet, densenet_layers = built("densenet121")
    densenet_conv5 = top_stage_layers(densenet, densenet_layers, 1)
    assert densenet_conv5[0] == "conv5_block1_0_bn" and densenet_conv5[-2:] == ["bn", "relu"]
    assert "pool4_conv" in top_stage_layers(densenet, densenet_layers, 2)  # transition 4
    with pytest.raises(ValueError, match="vgg16 has 5 stages"):
        top_stage_layers(model, backbone, 6)
    with pytest.raises(ValueError, match="last 0"):
        top_stage_layers(model, backbone, 0)


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
