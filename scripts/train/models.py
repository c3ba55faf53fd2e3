"""Model registry and builders: a scratch CNN and keras.applications backbones.

Every model is one flat functional graph ``image -> preprocessing -> backbone -> head``
(the backbone is built on the preprocessed tensor with ``input_tensor=``), so every
layer Grad-CAM may explain (the stage outputs, :func:`stages`; the one a run explains:
:func:`explained_layer`) stays reachable by name. Keras 3 cannot reach inner layers of
a backbone nested as a single layer.

TensorFlow is imported inside functions so that this registry can be read by the
workflow and the report without paying TensorFlow's start-up.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from dataclasses import dataclass
from pathlib import Path

from scripts.common import tracing
from scripts.plan.grid import SCRATCH_CNN
from scripts.weights.keras_applications import backbone_names, catalogue

# Each backbone's constructor, preprocessing and ImageNet weights file: the generated
# catalogue config/weights-registry.yaml (scripts/weights/keras_applications.py).
MODELS = (SCRATCH_CNN, *backbone_names())
SCRATCH_CNN_FILTERS = (32, 64, 128, 256)  # its blocks' widths, input to output


def parameters(name: str, n_classes: int = 3, backbone_file: dict | None = None) -> int:
    """Model ``name``'s parameters (Keras's ``count_params``) with an ``n_classes`` head,
    without building it: what the Slurm pre-flight sizes saved weights and checkpoints by.
    A backbone's count and width are in the catalogue; the scratch CNN's are its 3x3
    convolutions and BatchNorms; the head (:func:`_head`) adds the standardisation's mean,
    variance and count and the logits layer. A declared backbone file (``backbone_file``)
    is sized by its bytes, 4 a parameter (float32 weights; its own top included, so an
    upper bound), without a head."""
    if backbone_file is not None:
        return Path(backbone_file["path"]).stat().st_size // 4
    if name == SCRATCH_CNN:
        widths = (3, *SCRATCH_CNN_FILTERS)
        backbone = sum(9 * n_in * n_out + 4 * n_out for n_in, n_out in itertools.pairwise(widths))
        features = SCRATCH_CNN_FILTERS[-1]
    else:
        backbone, features = catalogue()[name]["parameters"], catalogue()[name]["features"]
    return backbone + 2 * features + 1 + (features + 1) * n_classes


@dataclass(frozen=True)
class Stage:
    """A run of backbone layers at one resolution: what ``partial_stages`` unfreezes."""

    layers: tuple[str, ...]
    # Its last layer before the downsampling that ends it (the Grad-CAM candidate), or
    # None where the stage starts with the network's input.
    output: str | None


def stages(model) -> list[Stage]:
    """The stages of ``model``'s network (the layers before its head), derived from the graph.

    A stage boundary is a downsampling by a factor of 2 or more: a strided convolution
    or pooling layer that makes the maps coarser than every earlier layer's. A change of
    size alone is none (unpadded convolutions shrink maps, InceptionV3 37 -> 35 px). A
    weightless pooling layer ends the stage before it (VGG16's ``block5_pool`` is no top
    stage with nothing to train); a strided convolution starts its stage, with the
    padding layers that feed it (ResNet's ``conv{i}_block1_*_conv``). A stage with nothing
    to train (input scaling, a padding layer) joins the stage after it, or the one before
    it at the end. Each stage's output is the input of the downsampling that ends it,
    and the network's last layer for the last stage.
    """
    import keras

    network = []
    for layer in model.layers:
        if layer.name == "head_pool":
            break
        if not isinstance(layer, keras.layers.InputLayer):
            network.append(layer)
    cut = _downsampling_levels(model)
    groups: list[list] = [[]]
    outputs: list[str | None] = []
    level = 1
    for layer in network:
        if cut[layer.name] <= level:
            groups[-1].append(layer)
            continue
        level = cut[layer.name]
        if _trainable_by_nature(layer):  # a strided convolution (or a block that starts with one)
            padding = []
            source = _parent(layer)
            while isinstance(source, keras.layers.ZeroPadding2D) and groups[-1] and groups[-1][-1] is source:
                padding.insert(0, groups[-1].pop())
                source = _parent(source)
            outputs.append(_nearest_layer(source, network))
            groups.append([*padding, layer])
        else:  # weightless pooling: the last layer of the stage before it
            source = _parent(layer)
            while isinstance(source, keras.layers.ZeroPadding2D):
                source = _parent(source)
            groups[-1].append(layer)
            outputs.append(_nearest_layer(source, network))
            groups.append([])
    outputs.append(network[-1].name)
    found: list[Stage] = []
    carried: list[str] = []
    for group, output in zip(groups, outputs, strict=True):
        names = [*carried, *(layer.name for layer in group)]
        if any(_trainable_by_nature(layer) for layer in group):
            found.append(Stage(tuple(names), output))
            carried = []
        else:
            carried = names
    if carried and found:
        found[-1] = Stage(found[-1].layers + tuple(carried), found[-1].output)
    return found


def _trainable_by_nature(layer) -> bool:
    """Whether ``layer`` has variables that training updates, frozen or not (a frozen
    layer's ``trainable_weights`` is empty; an input Normalization's statistics never train)."""
    return any(sublayer._trainable_variables for sublayer in layer._flatten_layers())


def _nearest_layer(source, network: list) -> str | None:
    """``source`` if it is a layer of the network; for an operation that is no layer (the
    residual ``+`` of ConvNeXt, which ``get_layer`` cannot reach), the deepest network
    layer it is computed from (there: the residual branch's last layer)."""
    if source in network:
        return source.name
    order = {id(layer): index for index, layer in enumerate(network)}
    found, pending, seen = [], [source], set()
    while pending:
        operation = pending.pop()
        if id(operation) in seen:
            continue
        seen.add(id(operation))
        if id(operation) in order:
            found.append(operation)
            continue
        pending += [parent.operation for node in operation._inbound_nodes for parent in node.parent_nodes]
    return max(found, key=lambda layer: order[id(layer)]).name if found else None


def _parent(layer):
    """The one layer (or operation) whose output ``layer`` takes."""
    (parent,) = layer._inbound_nodes[0].parent_nodes
    return parent.operation


def _downsampling_levels(model) -> dict[str, int]:
    """Per operation of ``model``: how many times coarser than the image its output is,
    as the product of the strides on the way (a valid convolution's shrinking is no
    downsampling). A nested model (ConvNeXt's stem and downsampling blocks are
    ``Sequential``) counts as the strides inside it."""
    levels: dict[str, int] = {}
    for operation in model.operations:
        before = [levels.get(parent.operation.name, 1) for node in operation._inbound_nodes
                  for parent in node.parent_nodes]
        levels[operation.name] = max(before, default=1) * _stride(operation)
    return levels


def _stride(operation) -> int:
    import keras

    if isinstance(operation, keras.Sequential):
        return functools.reduce(lambda level, layer: level * _stride(layer), operation.layers, 1)
    if isinstance(operation, keras.Model):
        return max(_downsampling_levels(operation).values(), default=1)
    strides = getattr(operation, "strides", None)
    if strides is None or isinstance(operation, keras.layers.Conv2DTranspose):
        return 1
    return max(strides) if isinstance(strides, tuple | list) else int(strides)


def feature_map_cells(model) -> list[tuple[str, int]]:
    """Each layer Grad-CAM can explain in ``model`` (its stage outputs), input to output,
    with its cells per side."""
    return [(stage.output, model.get_layer(stage.output).output.shape[1]) for stage in stages(model)
            if stage.output is not None]


def explained_layer(model, min_cells: int) -> tuple[str, int]:
    """``(layer, cells per side)``: the layer whose Grad-CAM a run of ``model`` computes.

    The deepest stage output with at least ``min_cells`` cells per side
    (``gradcam.min_cells``): deeper layers see more of the image and are closer to the
    class decision, but a map of too few cells cannot say where anything is. When no
    layer has that many cells, the one with the most (the deepest among equals).
    """
    cells = feature_map_cells(model)
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
    for block, filters in enumerate(SCRATCH_CNN_FILTERS, start=1):
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
        if not any(marker in str(fname) for marker in ("notop", "no_top")):
            raise ValueError(f"Keras asked for {fname} ({origin}); only weights without top are served locally")
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


def _spatial(layer) -> bool:
    shape = getattr(layer, "output", None)
    return shape is not None and not isinstance(shape, list | tuple) and len(shape.shape) == 4


def _file_backbone(declaration: dict, image, pretrained: bool):
    """The network of a declared ``.keras`` file (scripts/weights/backbone_files.py) on
    ``image``, up to its ``end_layer`` (default: its last layer with a spatial output),
    its layers called on the preprocessed image so that the graph stays flat; with the
    file's weights where ``pretrained``, else from random weights (its architecture only).

    Returns ``(backbone output, backbone layers)``. The file is checked against its
    SHA256 before Keras reads it.
    """
    import keras
    from keras.tree import flatten as tree_flatten

    from scripts.weights.backbone_files import custom_object, rescale
    from scripts.weights.weight_files import WeightsError, check

    path = declaration["path"]
    check(path, sha256=declaration["sha256"])
    declared = declaration.get("custom_objects", {})
    objects = {name: custom_object(target, name, path) for name, target in declared.items()}
    try:
        loaded = keras.saving.load_model(path, custom_objects=objects, compile=False, safe_mode=True)
    except (TypeError, ValueError) as error:  # Keras's error for an unknown class or function
        raise WeightsError(f"backbone file {path} cannot be loaded with the custom objects declared "
                           f"({sorted(declared) or 'none'}): {error}") from None
    if not isinstance(loaded, keras.Model) or not hasattr(loaded, "_run_through_graph"):
        raise WeightsError(f"backbone file {path} holds a {type(loaded).__name__}, not a functional or "
                           "Sequential Keras model")
    layers = [layer for layer in loaded.layers if not isinstance(layer, keras.layers.InputLayer)]
    end = declaration.get("end_layer") or next((layer.name for layer in reversed(layers) if _spatial(layer)), None)
    names = [layer.name for layer in layers]
    if end not in names or not _spatial(loaded.get_layer(end)):
        raise WeightsError(f"backbone file {path}: end_layer {end!r} is not a layer with a spatial (4-D) "
                           f"output; its layers: {names}")
    taken = {"image", "rescale", "head_pool", "head_norm", "head_dropout", "logits", "predictions"} & set(names)
    if taken:
        raise WeightsError(f"backbone file {path}: layer names {sorted(taken)} are the classifier's own")
    channels = loaded.inputs[0].shape[-1]
    if channels != declaration["channels"]:
        raise WeightsError(f"backbone file {path}: its input has {channels} channels, the declaration says "
                           f"{declaration['channels']}")

    x = image
    if channels == 1:  # X-rays are grey: the three channels the pipeline reads are equal
        x = keras.ops.mean(x, axis=-1, keepdims=True)
    preprocessing = declaration["preprocessing"]
    if isinstance(preprocessing, str):
        x = getattr(keras.applications, preprocessing).preprocess_input(x)
    else:
        scale, offset = rescale(preprocessing)
        x = keras.layers.Rescaling(scale, offset, name="rescale")(x)
    network = keras.Model(loaded.inputs, loaded.get_layer(end).output)
    # A copy of each of the file's layers, called on this model's tensor and given the
    # file's weights: the file's own layers would keep the loaded graph as their first
    # node, which `layer.output` (Grad-CAM, the stages) reads. This is what
    # keras.models.clone_model does, without the new Functional it wraps the result in
    # (whose inputs would cut the graph at x).
    copies = {}

    def copy(layer):
        copies[layer.name] = type(layer).from_config(layer.get_config())
        return copies[layer.name]

    with keras.saving.custom_object_scope(objects):
        (features,) = tree_flatten(network._run_through_graph([x], operation_fn=copy))
    for name, layer in copies.items():
        if pretrained:
            layer.set_weights(loaded.get_layer(name).get_weights())
    return features, [name for name in names if name in copies]


@tracing.traced("build model (+ load weights)")
def build_model(model_name: str, image_size: int, n_classes: int, weights: str | Path | None, *,
                dropout: float, bn_momentum: float, backbone_file: dict | None = None):
    """The classifier for ``model_name``; ``weights`` is None (random init) or a local
    *_notop file; ``bn_momentum`` is the scratch CNN's BatchNorm momentum;
    ``backbone_file``: the declaration of a user's ``.keras`` backbone (``backbones:``);
    ``weights`` is then None (its architecture from random weights) or its own file.

    Returns ``(model, backbone_layer_names)``; the scratch CNN has no backbone.
    """
    import keras

    if model_name == SCRATCH_CNN:
        return build_scratch_cnn(image_size, n_classes, dropout, bn_momentum), []
    if backbone_file is not None:
        if weights is not None and str(weights) != backbone_file["path"]:
            raise ValueError(f"{model_name} is the backbone file {backbone_file['path']}: it takes no other "
                             f"weights ({weights})")
        inputs = keras.Input((image_size, image_size, 3), name="image")
        features, backbone = _file_backbone(backbone_file, inputs, pretrained=weights is not None)
        return keras.Model(inputs, _head(features, n_classes, dropout), name=model_name), backbone
    spec = catalogue()[model_name]
    inputs = keras.Input((image_size, image_size, 3), name="image")
    # The family's own preprocessing: preprocess_input is the identity where the
    # constructor scales inside the model (include_preprocessing), so it is applied once.
    preprocessed = getattr(keras.applications, spec["module"]).preprocess_input(inputs)
    constructor = getattr(keras.applications, spec["constructor"])
    if weights is None:
        base = constructor(include_top=False, weights=None, input_tensor=preprocessed)
    else:
        base = _pretrained_backbone(constructor, preprocessed, weights)
    model = keras.Model(inputs, _head(base.output, n_classes, dropout), name=model_name)
    backbone = [layer.name for layer in base.layers if not isinstance(layer, keras.layers.InputLayer)]
    return model, backbone


def top_stage_layers(model, backbone: list[str], count: int) -> list[str]:
    """The backbone layers of the last ``count`` stages of ``model``."""
    found = stages(model)
    if not 1 <= count <= len(found):
        raise ValueError(f"{model.name} has {len(found)} stages (its downsamplings): "
                         f"cannot fine-tune the last {count}")
    chosen = {name for stage in found[-count:] for name in stage.layers}
    return [name for name in backbone if name in chosen]


def set_trainable(model, backbone: list[str], trainable: str, stages: int = 0,
                  bn_momentum: float | None = None) -> None:
    """Freeze the model for one training phase.

    ``trainable``: ``all`` (scratch: every layer, BatchNorm included), ``head``
    (backbone frozen), ``top`` (the last ``stages`` backbone stages, see
    :func:`stages`) or ``backbone`` (all
    backbone layers). BatchNorm layers of a pretrained backbone stay frozen, which in
    Keras 3 also runs them in inference mode: re-estimating their statistics from small
    batches of X-rays destroys the pretrained features. A backbone trained from scratch
    (``all``) gets ``bn_momentum``, as the scratch CNN does.
    """
    import keras

    if trainable == "top":
        unfrozen = set(top_stage_layers(model, backbone, stages))
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
