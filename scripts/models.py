"""Model registry and builders: a scratch CNN and keras.applications backbones.

Every model is one flat functional graph ``image -> preprocessing -> backbone -> head``
(the backbone is built on the preprocessed tensor with ``input_tensor=``), so the
backbone's last convolution stays reachable by name for Grad-CAM. Keras 3 cannot
reach inner layers of a backbone nested as a single layer.

TensorFlow is imported inside functions so that this registry can be read by the
workflow and the report without paying TensorFlow's start-up.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backbone:
    application: str  # constructor in keras.applications
    preprocess_module: str  # keras.applications submodule holding preprocess_input
    last_conv: str  # layer whose activations Grad-CAM explains


# ImageNet weight files and their hashes: config/weights-registry.yaml.
BACKBONES = {
    "vgg16": Backbone("VGG16", "vgg16", "block5_conv3"),
    "resnet50": Backbone("ResNet50", "resnet50", "conv5_block3_out"),
    "efficientnetb0": Backbone("EfficientNetB0", "efficientnet", "top_activation"),
    "densenet121": Backbone("DenseNet121", "densenet", "relu"),
}
SCRATCH_CNN = "scratch_cnn"
SCRATCH_CNN_LAST_CONV = "block4_relu"
MODELS = (SCRATCH_CNN, *BACKBONES)
STRATEGIES = ("scratch", "frozen", "partial", "full")
# BatchNorm statistics learned from scratch: Keras's default momentum (0.99) needs
# hundreds of steps before the moving averages used at inference are meaningful; a
# small dataset gives tens, and the model then predicts one class at validation.
# Measured on the demo (3 epochs, 21 steps): momentum 0.9 still predicted one class
# (test macro-F1 0.19); 0.7 gave macro-F1 0.88, AUC 0.97.
SCRATCH_BN_MOMENTUM = 0.7


def last_conv_layer(model_name: str) -> str:
    return SCRATCH_CNN_LAST_CONV if model_name == SCRATCH_CNN else BACKBONES[model_name].last_conv


def _head(features, n_classes: int, dropout: float):
    import keras

    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(features)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    # float32 output keeps softmax and loss stable under mixed precision.
    return keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="predictions")(x)


def build_scratch_cnn(image_size: int, n_classes: int, dropout: float = 0.3):
    """Four conv-BN-ReLU-pool blocks: the small baseline every backbone must beat."""
    import keras

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for block, filters in enumerate((32, 64, 128, 256), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{block}_conv")(x)
        x = keras.layers.BatchNormalization(momentum=SCRATCH_BN_MOMENTUM, name=f"block{block}_bn")(x)
        x = keras.layers.Activation("relu", name=f"block{block}_relu")(x)
        if block < 4:
            x = keras.layers.MaxPooling2D(name=f"block{block}_pool")(x)
    return keras.Model(inputs, _head(x, n_classes, dropout), name=SCRATCH_CNN)


def build_model(model_name: str, image_size: int, n_classes: int, weights: str | None = None,
                dropout: float = 0.3):
    """The classifier for ``model_name``; ``weights`` is None or a local *_notop file.

    Returns ``(model, backbone_layer_names)``; the scratch CNN has no backbone.
    """
    import keras

    if model_name == SCRATCH_CNN:
        return build_scratch_cnn(image_size, n_classes, dropout), []
    spec = BACKBONES[model_name]
    inputs = keras.Input((image_size, image_size, 3), name="image")
    preprocess = getattr(keras.applications, spec.preprocess_module).preprocess_input
    constructor = getattr(keras.applications, spec.application)
    base = constructor(include_top=False, weights=weights, input_tensor=preprocess(inputs))
    model = keras.Model(inputs, _head(base.output, n_classes, dropout), name=model_name)
    backbone = [layer.name for layer in base.layers if not isinstance(layer, keras.layers.InputLayer)]
    return model, backbone


def set_trainable(model, backbone: list[str], trainable: str, top_layers: int = 0) -> None:
    """Freeze the model for one training phase.

    ``trainable``: ``all`` (scratch: every layer, BatchNorm included), ``head``
    (backbone frozen), ``top`` (the top ``top_layers`` backbone layers) or
    ``backbone`` (all backbone layers). BatchNorm layers of a pretrained backbone stay
    frozen, which in Keras 3 also runs them in inference mode: re-estimating their
    statistics from small batches of X-rays destroys the pretrained features.
    """
    import keras

    unfrozen = {
        "all": set(backbone),
        "head": set(),
        "top": set(backbone[-top_layers:]) if top_layers else set(),
        "backbone": set(backbone),
    }[trainable]
    for layer in model.layers:
        is_batchnorm = isinstance(layer, keras.layers.BatchNormalization)
        if layer.name not in backbone:
            layer.trainable = True
        elif trainable != "all" and is_batchnorm:
            layer.trainable = False
        else:
            layer.trainable = layer.name in unfrozen
            if is_batchnorm:
                layer.momentum = SCRATCH_BN_MOMENTUM


def count_params(model) -> dict[str, int]:
    import numpy as np

    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    total = sum(int(np.prod(w.shape)) for w in model.weights)
    return {"trainable_params": trainable, "total_params": total}
