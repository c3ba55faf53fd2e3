"""Model registry and builders: a scratch CNN and keras.applications backbones.

Every model is one flat functional graph ``image -> preprocessing -> backbone -> head``
(the backbone is built on the preprocessed tensor with ``input_tensor=``), so every
layer Grad-CAM may explain (``feature_maps``; the one a run explains:
:func:`explained_layer`) stays reachable by name. Keras 3 cannot reach inner layers of
a backbone nested as a single layer.

TensorFlow is imported inside functions so that this registry can be read by the
workflow and the report without paying TensorFlow's start-up.
"""

from __future__ import annotations

import contextlib
import functools
import re
from dataclasses import dataclass
from pathlib import Path

from scripts.common import tracing
from scripts.plan.grid import SCRATCH_CNN


@dataclass(frozen=True)
class Backbone:
    application: str  # constructor in keras.applications
    preprocess_module: str  # keras.applications submodule holding preprocess_input
    # The backbone's stages in layer order: (stage, regular expression that matches the
    # whole name of each of its layers). Auto-numbered names (``rescaling_3``) come from
    # Keras's per-process layer counter, hence the optional ``_N``.
    stages: tuple[tuple[str, str], ...]
    # The layers Grad-CAM can explain, input to output: (layer, the halvings from the
    # image to it, each rounding as Keras's layer does: "c" a padded stride-2 convolution
    # or pooling, which keeps an odd cell, "f" an unpadded 2x2 pooling, which drops it).
    # One per stage, its last convolutional output before the stage downsamples; the last
    # is the backbone's last convolutional layer.
    feature_maps: tuple[tuple[str, str], ...]

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(stage for stage, _ in self.stages)

    @property
    def last_conv(self) -> str:
        return self.feature_maps[-1][0]

    def stage_of(self, layer_name: str) -> str:
        """The stage of one backbone layer; exactly one stage must claim it."""
        matches = [stage for stage, pattern in self.stages if re.fullmatch(pattern, layer_name)]
        if len(matches) != 1:
            raise ValueError(f"{self.application} layer {layer_name!r} matches stages {matches}, not one")
        return matches[0]


# ImageNet weight files and their hashes: config/weights-registry.yaml.
# Stages follow the papers' tables. ResNet50: conv1 (7x7 conv and the stem max pool),
# conv2..conv5 (bottleneck groups). EfficientNetB0: the stem (input scaling and the
# 3x3 conv), block1..block7 (MBConv groups of one resolution/width), top (1x1 conv to
# 1280). DenseNet121: conv1 (stem conv and max pool), conv2..conv4 (dense block and the
# transition layer after it), conv5 (last dense block and the final BN-ReLU, which alone
# holds no trainable weight outside BatchNorm and so is no stage of its own).
# Feature maps: VGG16's last conv of each block (its 2x2 pools drop an odd cell);
# ResNet50's stem ReLU and each group's last block output; EfficientNetB0's stem
# activation, each group's last block output (``add`` after a residual, ``project_bn``
# where a group has one block) and the top activation; DenseNet121's stem ReLU, each
# transition's 1x1 conv (before its 2x2 average pooling) and the final ReLU.
BACKBONES = {
    "vgg16": Backbone("VGG16", "vgg16", tuple(
        (f"block{i}", rf"block{i}_(conv\d|pool)") for i in range(1, 6)), (
        ("block1_conv2", ""), ("block2_conv2", "f"), ("block3_conv3", "ff"), ("block4_conv3", "fff"),
        ("block5_conv3", "ffff"))),
    "resnet50": Backbone("ResNet50", "resnet50", (
        ("conv1", r"conv1_(pad|conv|bn|relu)|pool1_(pad|pool)"),
        *((f"conv{i}", rf"conv{i}_block\d+_\w+") for i in range(2, 6))), (
        ("conv1_relu", "c"), ("conv2_block3_out", "cc"), ("conv3_block4_out", "ccc"),
        ("conv4_block6_out", "cccc"), ("conv5_block3_out", "ccccc"))),
    "efficientnetb0": Backbone("EfficientNetB0", "efficientnet", (
        ("stem", r"(rescaling|normalization)(_\d+)?|stem_\w+"),
        *((f"block{i}", rf"block{i}[a-z]_\w+") for i in range(1, 8)),
        ("top", r"top_\w+")), (
        ("stem_activation", "c"), ("block1a_project_bn", "c"), ("block2b_add", "cc"), ("block3b_add", "ccc"),
        ("block4c_add", "cccc"), ("block5c_add", "cccc"), ("block6d_add", "ccccc"),
        ("block7a_project_bn", "ccccc"), ("top_activation", "ccccc"))),
    "densenet121": Backbone("DenseNet121", "densenet", (
        ("conv1", r"zero_padding2d(_\d+)?|conv1_\w+|pool1"),
        *((f"conv{i}", rf"conv{i}_block\d+_\w+|pool{i}_\w+") for i in range(2, 5)),
        ("conv5", r"conv5_block\d+_\w+|bn|relu")), (
        ("conv1_relu", "c"), ("pool2_conv", "cc"), ("pool3_conv", "ccf"), ("pool4_conv", "ccff"),
        ("relu", "ccfff"))),
}
# Each block's ReLU; 2x2 max pools (unpadded) follow the first three.
SCRATCH_CNN_FEATURE_MAPS = (("block1_relu", ""), ("block2_relu", "f"), ("block3_relu", "ff"),
                            ("block4_relu", "fff"))
MODELS = (SCRATCH_CNN, *BACKBONES)
# Each model's parameters with a 3-class head (keras count_params; a class more adds the
# backbone's feature width + 1): what the Slurm pre-flight sizes saved weights and
# checkpoints by. tests/model/test_backbones.py builds every model and checks them.
PARAMETERS = {SCRATCH_CNN: 391_140, "vgg16": 14_717_252, "resnet50": 23_597_956,
              "efficientnetb0": 4_055_975, "densenet121": 7_042_628}


def feature_maps(model_name: str) -> tuple[tuple[str, str], ...]:
    return SCRATCH_CNN_FEATURE_MAPS if model_name == SCRATCH_CNN else BACKBONES[model_name].feature_maps


def last_conv_layer(model_name: str) -> str:
    return feature_maps(model_name)[-1][0]


def feature_map_cells(model_name: str, image_size: int) -> list[tuple[str, int]]:
    """Each layer Grad-CAM can explain in ``model_name``, input to output, with its cells
    per side for a square ``image_size`` input."""
    return [(layer, functools.reduce(_halved, halvings, image_size)) for layer, halvings in feature_maps(model_name)]


def _halved(cells: int, rounding: str) -> int:
    """``cells`` after one halving that rounds up (``c``) or down (``f``)."""
    return -(-cells // 2) if rounding == "c" else cells // 2


def explained_layer(model_name: str, image_size: int, min_cells: int) -> tuple[str, int]:
    """``(layer, cells per side)``: the layer whose Grad-CAM a run of ``model_name`` at
    ``image_size`` px computes.

    The deepest feature map with at least ``min_cells`` cells per side (``gradcam.min_cells``):
    deeper layers see more of the image and are closer to the class decision, but a map of
    too few cells cannot say where anything is. When no layer has that many cells, the
    one with the most (the deepest among equals).
    """
    cells = feature_map_cells(model_name, image_size)
    enough = [(layer, n) for layer, n in cells if n >= min_cells]
    if enough:
        return enough[-1]
    most = max(n for _, n in cells)
    return [(layer, n) for layer, n in cells if n == most][-1]


@functools.cache
def feature_standardization():
    """``keras.layers.Normalization`` that reads its mean and variance variables on
    every call.

    Keras's own layer copies them into constants when it is built, adapted or loaded,
    so ``set_weights`` alone (how training sets them from cached features) would be
    ignored, and a function traced before would keep the old constants.
    """
    import keras
    from keras import ops

    class FeatureStandardization(keras.layers.Normalization):
        def call(self, inputs):
            inputs = ops.convert_to_tensor(inputs, dtype=self.compute_dtype)
            mean = ops.cast(ops.reshape(self.adapt_mean, self._broadcast_shape), self.compute_dtype)
            variance = ops.cast(ops.reshape(self.adapt_variance, self._broadcast_shape), self.compute_dtype)
            return (inputs - mean) / ops.maximum(ops.sqrt(variance), keras.backend.epsilon())

    return FeatureStandardization


def _head(features, n_classes: int, dropout: float):
    import keras

    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(features)
    # Identity until training sets it (set_feature_statistics); float32 because the
    # statistics come from float32 features and bf16 would keep ~3 significant digits.
    x = feature_standardization()(axis=-1, dtype="float32", name="head_norm")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    # Grad-CAM differentiates a class's logit; float32 keeps softmax and loss stable
    # under mixed precision.
    logits = keras.layers.Dense(n_classes, dtype="float32", name="logits")(x)
    return keras.layers.Activation("softmax", dtype="float32", name="predictions")(logits)


def set_feature_statistics(model, mean, variance) -> None:
    """Standardise the pooled features by ``mean`` and ``variance`` (per feature)."""
    import numpy as np

    layer = model.get_layer("head_norm")
    count = np.asarray(layer.weights[2].numpy())
    layer.set_weights([np.asarray(mean, np.float32), np.asarray(variance, np.float32), count])


# BatchNorm momentum of networks trained from scratch (the scratch CNN, random-init
# backbones): Keras's default 0.99 needs hundreds of steps before the moving statistics
# used at inference mean anything; a small dataset gives tens, and the model then predicts
# one class. 0.1 had the best validation macro-F1 on the demo (config/README.md,
# *BatchNorm of networks trained from scratch*).
SCRATCH_BN_MOMENTUM = 0.1


def build_scratch_cnn(image_size: int, n_classes: int, dropout: float, bn_momentum: float):
    """Four conv-BN-ReLU-pool blocks: the small baseline every backbone must beat.

    ``bn_momentum``: the training step passes :data:`SCRATCH_BN_MOMENTUM`.
    """
    import keras

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for block, filters in enumerate((32, 64, 128, 256), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{block}_conv")(x)
        x = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"block{block}_bn")(x)
        x = keras.layers.Activation("relu", name=f"block{block}_relu")(x)
        if block < 4:
            x = keras.layers.MaxPooling2D(name=f"block{block}_pool")(x)
    return keras.Model(inputs, _head(x, n_classes, dropout), name=SCRATCH_CNN)


@contextlib.contextmanager
def keras_download_served_from(path: str | Path):
    """Answer Keras's pretrained-weights download with the local file ``path``.

    Yields the list of file names Keras asked for, so the caller can check that the
    file was used. The applications call ``file_utils.get_file`` through the module,
    which is what is replaced here, for the duration of the block only.
    """
    from keras.src.utils import file_utils

    requested: list[str] = []

    def local_file(fname=None, origin=None, *args, **kwargs):
        if not str(fname).endswith("_notop.h5"):
            raise ValueError(f"Keras asked for {fname} ({origin}); only *_notop weights are served locally")
        requested.append(str(fname))
        return str(path)

    original = file_utils.get_file
    file_utils.get_file = local_file
    try:
        yield requested
    finally:
        file_utils.get_file = original


def _pretrained_backbone(constructor, input_tensor, weights: str | Path):
    """``constructor`` built as for ImageNet weights, loading the local file ``weights``.

    Keras builds some backbones differently when it loads its ImageNet weights
    (EfficientNet adds a ``Rescaling(1/sqrt(stddev))`` after its input normalisation),
    and a ``*_notop`` file holds weights trained with that graph. Passing the file as
    ``weights=`` would build the random-init graph instead.
    """
    from scripts.weights.weight_files import WeightsError

    if not Path(weights).is_file():
        raise WeightsError(f"weights file {weights} does not exist")
    with keras_download_served_from(weights) as requested:
        base = constructor(include_top=False, weights="imagenet", input_tensor=input_tensor)
    if not requested:  # a Keras change that bypasses the hook must not download silently
        raise RuntimeError(f"{constructor.__name__} did not ask for its weights file; {weights} not loaded")
    return base


@tracing.traced("build model (+ load weights)")
def build_model(model_name: str, image_size: int, n_classes: int, weights: str | Path | None, *,
                dropout: float, bn_momentum: float):
    """The classifier for ``model_name``; ``weights`` is None (random init) or a local
    *_notop file; ``bn_momentum`` is the scratch CNN's BatchNorm momentum.

    Returns ``(model, backbone_layer_names)``; the scratch CNN has no backbone.
    """
    import keras

    if model_name == SCRATCH_CNN:
        return build_scratch_cnn(image_size, n_classes, dropout, bn_momentum), []
    spec = BACKBONES[model_name]
    inputs = keras.Input((image_size, image_size, 3), name="image")
    preprocessed = getattr(keras.applications, spec.preprocess_module).preprocess_input(inputs)
    constructor = getattr(keras.applications, spec.application)
    if weights is None:
        base = constructor(include_top=False, weights=None, input_tensor=preprocessed)
    else:
        base = _pretrained_backbone(constructor, preprocessed, weights)
    model = keras.Model(inputs, _head(base.output, n_classes, dropout), name=model_name)
    backbone = [layer.name for layer in base.layers if not isinstance(layer, keras.layers.InputLayer)]
    return model, backbone


def top_stage_layers(model_name: str, backbone: list[str], stages: int) -> list[str]:
    """The backbone layers of the last ``stages`` stages of ``model_name``."""
    spec = BACKBONES[model_name]
    if not 1 <= stages <= len(spec.stages):
        raise ValueError(f"{model_name} has stages {', '.join(spec.stage_names)}: "
                         f"cannot fine-tune the last {stages}")
    chosen = set(spec.stage_names[-stages:])
    return [name for name in backbone if spec.stage_of(name) in chosen]


def set_trainable(model, backbone: list[str], trainable: str, stages: int = 0,
                  bn_momentum: float | None = None) -> None:
    """Freeze the model for one training phase.

    ``trainable``: ``all`` (scratch: every layer, BatchNorm included), ``head``
    (backbone frozen), ``top`` (the last ``stages`` backbone stages, see
    ``Backbone.stages``; the model's name says which backbone) or ``backbone`` (all
    backbone layers). BatchNorm layers of a pretrained backbone stay frozen, which in
    Keras 3 also runs them in inference mode: re-estimating their statistics from small
    batches of X-rays destroys the pretrained features. A backbone trained from scratch
    (``all``) gets ``bn_momentum``, as the scratch CNN does.
    """
    import keras

    if trainable == "top":
        unfrozen = set(top_stage_layers(model.name, backbone, stages))
    else:
        unfrozen = {"all": set(backbone), "head": set(), "backbone": set(backbone)}[trainable]
    for layer in model.layers:
        is_batchnorm = isinstance(layer, keras.layers.BatchNormalization)
        if layer.name not in backbone:
            layer.trainable = True
        elif trainable != "all" and is_batchnorm:
            layer.trainable = False
        else:
            layer.trainable = layer.name in unfrozen
            if is_batchnorm and bn_momentum is not None:
                layer.momentum = bn_momentum


def _n_params(variables) -> int:
    import numpy as np

    return sum(int(np.prod(v.shape)) for v in variables)


def trainable_share(model, backbone: list[str]) -> float:
    """Trainable backbone parameters / all backbone parameters (every variable of the
    backbone's layers, BatchNorm statistics included, as Keras counts them)."""
    layers = [model.get_layer(name) for name in backbone]
    total = _n_params(v for layer in layers for v in layer.weights)
    return _n_params(v for layer in layers for v in layer.trainable_weights) / total if total else 0.0


def count_params(model) -> dict[str, int]:
    return {"trainable_params": _n_params(model.trainable_weights), "total_params": _n_params(model.weights)}
