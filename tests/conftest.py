"""Shared fixtures: real demo images, small dataset copies and a tiny real study."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
DEMO = PROJECT / "resources" / "demo" / "covid19-cxr-3class"
DEMO_STUDY = PROJECT / "config" / "demo.yaml"  # the demo's settings (`make demo`)
XSS_CLASS = '<img src=x onerror=alert(1)> & "q"'
sys.path.insert(0, str(PROJECT))



def snakemake(workdir: Path, *args: str, timeout: int = 900, check: bool = True):
    """Run the workflow on ``workdir`` with this interpreter's environment."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    command = [sys.executable, "-m", "snakemake", "-s", str(PROJECT / "workflow" / "Snakefile"),
               "--directory", str(workdir), "--show-failed-logs", *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


LEAKED = ("train/Covid/COVID-00012.jpg", "test/Covid/COVID-00012.jpg")


def copy_dataset(target: Path, per_class: dict[str, int] | None = None,
                 rename: dict[str, str] | None = None, extra: tuple[str, ...] = LEAKED) -> Path:
    """A copy of the demo data (optionally the first N images of each split/class plus
    ``extra`` files, optionally with classes renamed) and a fresh manifest next to it."""
    from scripts.data.manifest import make_manifest

    rename = rename or {}
    for split_dir in sorted(DEMO.iterdir()):
        for class_dir in sorted(split_dir.iterdir()):
            files = sorted(class_dir.iterdir())
            if per_class:
                keep = per_class.get(split_dir.name, len(files))
                files = [f for i, f in enumerate(files)
                         if i < keep or f"{split_dir.name}/{class_dir.name}/{f.name}" in extra]
            out = target / split_dir.name / rename.get(class_dir.name, class_dir.name)
            out.mkdir(parents=True)
            for file in files:
                shutil.copy2(file, out / file.name)
    (target.parent / f"{target.name}.sha256").write_text(make_manifest(target))
    return target


def validated(config: dict) -> dict:
    """``config`` with every default filled in from the schema (what the workflow runs with)."""
    from snakemake.utils import validate

    config = json.loads(json.dumps(config))
    validate(config, str(PROJECT / "workflow" / "schemas" / "config.schema.yaml"))
    return config


def write_config(path: Path, dataset: Path, device: str = "cpu", **overrides) -> Path:
    """A study config for ``dataset``; ``overrides`` replace whole top-level keys.
    ``training.device`` is ``device`` unless ``training`` names one: ``cpu``, because the
    test cluster's GPU is fake (Slurm sets ``CUDA_VISIBLE_DEVICES`` while TensorFlow sees
    none), as a user of a CPU-only cluster would set it."""
    import yaml

    config = {
        "datasets": {"tiny": {"path": str(dataset), "manifest": f"{dataset}.sha256"}},
        "models": ["scratch_cnn", "vgg16"],
        "strategies": ["scratch", "partial"],
        "seeds": [1],
        "weights": "none",
        "training": {"image_size": 32, "batch_size": 16, "epochs": 2, "warmup_epochs": 1,
                     "learning_rate": 1e-3, "finetune_learning_rate": 1e-4,
                     "partial_stages": 1, "early_stopping_patience": 0},
        "gradcam": {"images_per_class": 2},
    }
    for key, value in overrides.items():
        config[key] = value
    config["training"] = {"device": device, **config["training"]}
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """One real end-to-end run: 2 models × 2 strategies × 1 seed (3 valid runs, one
    skipped), 32 px, 2 epochs, on real X-rays whose third class is named like an
    HTML injection."""
    work = tmp_path_factory.mktemp("study")
    data = copy_dataset(work / "data", {"train": 24, "test": 8}, {"Viral Pneumonia": XSS_CLASS})
    config = write_config(work / "config.yaml", data)
    result = snakemake(work, "--configfile", str(config), "--cores", "2")
    return {"workdir": work, "data": data, "config": config, "log": result.stderr}




def fake_plan(root: Path, classes: list[str], runs: list[tuple], resamples: int = 200,
              positive_class: str | None = None, datasets: tuple[str, ...] = ("tiny",)) -> dict:
    """A study plan like the workflow's ``results/plan.json`` for hand-made runs
    ``(model, strategy, weights, seed)`` of every dataset in ``datasets``."""
    dataset = {"path": str(root / "data"), "manifest": str(root / "data.sha256")}
    if positive_class:
        dataset["positive_class"] = positive_class
    config = validated({"datasets": {name: dataset for name in datasets},
                        "models": sorted({r[0] for r in runs}), "strategies": sorted({r[1] for r in runs}),
                        "seeds": sorted({r[3] for r in runs}), "weights": "imagenet",
                        "evaluation": {"bootstrap_resamples": resamples}})
    planned = []
    for name in datasets:
        for model, strategy, weights, seed in runs:
            folder = f"{name}/runs/{model}/{strategy}/{weights}/frac1.0/seed{seed}"
            planned.append({"dataset": name, "model": model, "strategy": strategy, "weights": weights,
                            "fraction": "1.0", "seed": seed, "dir": str(root / "results" / folder),
                            "log_dir": str(root / "logs" / folder)})
    return {"config": config, "settings": {"files": [], "user_set": []},
            "runs": planned, "skipped": [],
            "datasets": {name: {"verify": str(root / "results" / name / "data" / "verify.json"),
                                "conversions": str(root / "results" / name / "data" / "images_32px.json"),
                                "thumbnails": str(root / "results" / name / "data" / "test_thumbnails.npz"),
                                "leakage": str(root / "results" / name / "data" / "leakage.csv"),
                                "split": str(root / "results" / name / "splits" / "seed1.csv"),
                                "log_dir": str(root / "logs" / name)} for name in datasets}}


def fake_run(run: dict, run_files: dict, classes: list[str], labels, probabilities, val_f1: float,
             paths: list[str] | None = None) -> None:
    """The files of one finished run with the given test predictions (cheap: no training)."""
    import numpy as np
    import pandas as pd

    from scripts.stats.evaluation import compute_metrics

    folder = Path(run["dir"])
    folder.mkdir(parents=True, exist_ok=True)
    paths = paths or [f"test/{classes[label]}/{i:04d}.png" for i, label in enumerate(labels)]
    predictions = pd.DataFrame({"path": paths, "label": [classes[i] for i in labels],
                                "predicted": [classes[i] for i in probabilities.argmax(1)]})
    for i, name in enumerate(classes):
        predictions[f"p_{name}"] = probabilities[:, i]
    predictions.to_csv(folder / run_files["predictions"], index=False)
    predictions.to_csv(folder / run_files["val_predictions"], index=False)
    positive = classes[1] if len(classes) == 2 else None
    test = compute_metrics(np.asarray(labels), probabilities, classes, positive)
    (folder / run_files["metrics"]).write_text(json.dumps(
        {"test": test, "validation": {**test, "f1_macro": val_f1}, "gradcam_layer": "features", "gradcam_cells": 2}))
    (folder / run_files["info"]).write_text(json.dumps({
        "strategy": run["strategy"], "classes": classes, "weights": {"source": "imagenet", "sha256": "ab" * 32},
        "environment": {"host": "node1", "slurm_job_id": None, "cuda_visible_devices": None,
                        "packages": {"tensorflow": "2.21.0"}},
        "devices": ["CPU"], "threads": 1, "precision_policy": "float32", "augmentation_applied": True,
        "train_seconds": 1.5, "seconds_per_epoch": 0.5, "images_per_second": 100.0, "trainable_params": 10,
        "total_params": 100, "backbone_trainable_share": 0.1, "epochs_run": 2, "best_epoch": 2, "peak_rss_mb": 500.0,
        "n_train": 20}))
    pd.DataFrame({"epoch": [1, 2], "phase": ["train", "train"], "loss": [1.0, 0.8],
                  "accuracy": [0.5, 0.6], "val_loss": [1.1, 0.9], "val_accuracy": [0.4, 0.5],
                  "seconds": [0.5, 0.5]}).to_csv(folder / run_files["history"], index=False)
    np.savez_compressed(folder / run_files["gradcam"], cams=np.zeros((len(labels), 2, 2), np.float16),
                        paths=np.asarray(paths))
    (folder / run_files["model"]).write_bytes(b"")
    if "external" in run_files:  # no external tests: the header only, as the train job writes it
        (folder / run_files["external"]).write_text("dataset,path,label,predicted\n")


CHROMIUM = shutil.which("chromium")
chromium = pytest.mark.skipif(not CHROMIUM, reason="Debian chromium not installed (tests/run.sh installs it as root)")


def open_in_chromium(report: Path, workdir: Path) -> dict:
    """Open ``report`` in headless Chromium (fresh profile) and read what a reader sees."""
    from playwright.sync_api import sync_playwright

    requests, dialogs = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            workdir / "chromium-profile", executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
        )
        browser.set_default_timeout(600_000)  # a loaded machine: loading a large report can take minutes
        page = browser.new_page()
        page.on("request", lambda request: requests.append(request.url))
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(report.as_uri(), wait_until="load")
        result = {
            "images": page.eval_on_selector_all(
                "img", "imgs => imgs.map(i => ({ok: i.complete && i.naturalWidth > 0, alt: i.alt}))"),
            "cells": page.eval_on_selector_all("table[id^=gradcam-grid] td.gradcam-cell", "c => c.length"),
            "columns": page.eval_on_selector_all("table[id^=gradcam-grid] tr:first-child th img", "c => c.length"),
            "rows": page.eval_on_selector_all("table[id^=gradcam-grid] tr", "r => r.length") - 1,
            "text": page.inner_text("body"),
        }
        page.screenshot(path=str(workdir / "report.png"), full_page=True)
        browser.close()
    result["outside"] = [u for u in requests if not u.startswith(("file://", "data:"))]
    result["dialogs"] = dialogs
    return result


def lab_network(size: int, channels: int = 1, custom_layer=None):
    """A lab's own small CNN, as a user would bring as a backbone file: three
    conv-BN-ReLU blocks, each halving the maps by pooling, a last convolution, then a
    classifier of its own (dense), which the backbone leaves out."""
    import keras

    inputs = keras.Input((size, size, channels))
    x = inputs
    for block, filters in enumerate((8, 16, 32), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"lab{block}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"lab{block}_bn")(x)
        x = keras.layers.Activation("relu", name=f"lab{block}_relu")(x)
        x = keras.layers.MaxPooling2D(name=f"lab{block}_pool")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="lab4_conv")(x)
    if custom_layer is not None:
        x = custom_layer(name="lab_custom")(x)
    x = keras.layers.GlobalAveragePooling2D(name="lab_gap")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="lab_logits")(x))


def lab_backbone_file(path, network) -> dict:
    """``network`` saved at ``path`` (.keras) and its declaration as under ``backbones:``."""
    from scripts.common import fsutil

    network.save(path)
    return {"path": str(path), "sha256": fsutil.file_digest(path), "preprocessing": {"rescale": "1/255"},
            "channels": network.inputs[0].shape[-1], "custom_objects": {}}


def random_notop_file(path, name: str) -> str:
    """A ``*_notop`` file in the legacy h5 layout of Keras's published ones, with random
    weights, and random statistics where the init would be an identity (BatchNorm,
    EfficientNet's input Normalization), so that loading them changes the outputs."""
    import h5py
    import keras
    import numpy as np
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    from scripts.weights.keras_applications import catalogue

    keras.utils.set_random_seed(11)
    rng = np.random.default_rng(11)
    base = getattr(keras.applications, catalogue()[name]["constructor"])(
        include_top=False, weights=None, input_shape=(32, 32, 3))
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0, 0.1, size))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, size))
        elif isinstance(layer, keras.layers.Normalization):
            layer.set_weights([rng.uniform(0.3, 0.6, 3), rng.uniform(0.05, 0.1, 3), np.array(1)])
    with h5py.File(path, "w") as handle:
        save_weights_to_hdf5_group(handle, base)
    return str(path)


REGION = 4  # px: the top-left square of a region-model image whose bright pixels decide its class
BRIGHT = 100  # grey level above which a pixel counts as bright


def region_model(size: int = 8):
    """A hand-set Keras classifier of ``size`` px RGB images, with the layer names the
    inference pass reads. ``features`` channel 0 is ``relu(grey - BRIGHT)`` inside the top-left
    ``REGION`` px square and 0 elsewhere, channel 1 is ``grey`` everywhere; ``logits`` = ``[0.01
    · mean(c1) - mean(c0), mean(c0)]``: class 1 exactly when that square has a bright pixel.
    Grad-CAM of class 1 is then the square's bright pixels, of class 0 the grey image."""
    import keras
    import numpy as np

    inputs = keras.Input((size, size, 3))
    conv = keras.layers.Conv2D(2, 1, name="conv")
    region = np.zeros((1, size, size, 2), np.float32)
    region[0, :REGION, :REGION, 0], region[..., 1] = 1.0, 1.0
    features = keras.layers.Lambda(lambda x: keras.ops.relu(x) * region, name="features")(conv(inputs))
    pooled = keras.layers.GlobalAveragePooling2D(name="head_pool")(features)
    logits = keras.layers.Dense(2, name="logits")(pooled)
    model = keras.Model(inputs, keras.layers.Softmax(name="predictions")(logits))
    conv.set_weights([np.full((1, 1, 3, 2), 1 / 3, np.float32), np.array([-BRIGHT, 0], np.float32)])
    model.get_layer("logits").set_weights([np.array([[-1.0, 1.0], [0.01, 0.0]], np.float32), np.zeros(2, np.float32)])
    return model


def region_images(size: int = 8) -> tuple:
    """Three ``size`` px images on a grey 60 background: a 200 grey 2 x 2 patch inside the
    decisive square (class 1), the same patch outside it (class 0), no patch (class 0);
    and the patch's mask."""
    import numpy as np

    images = np.full((3, size, size, 3), 60, np.uint8)
    images[0, 1:3, 1:3] = 200
    images[1, -3:-1, -3:-1] = 200
    mask = np.zeros((size, size))
    mask[1:3, 1:3] = 1.0
    return images, mask


# The layers of the suite, one folder each (markers registered in pyproject.toml):
# `make test-fast` runs tests/unit alone; `pytest -m "not slurm"` and the like pick layers.
LAYERS = ("unit", "model", "workflow", "slurm", "browser", "scale")


def pytest_collection_modifyitems(items):
    for item in items:
        layer = Path(item.fspath).parent.name
        if layer in LAYERS:
            item.add_marker(layer)


KERMANY = PROJECT / "resources" / "kermany-pneumonia-subset"
# The Kermany example configs' patient pattern (config/examples/kermany-*.yaml).
KERMANY_GROUPS = {"pattern": r"^(person\d+|(?:NORMAL2-)?IM-\d+)"}
SHARED_PATIENT = "person83"


def kermany_patients(target: Path) -> Path:
    """A Kermany-style dataset of real images with repeated patients, and its manifest
    next to it. train/PNEUMONIA: the bundled subset's 60 test/PNEUMONIA images but one
    of person83 (47 patients, 8 with 2 to 4 images); train/NORMAL: 40 of its test/NORMAL
    images (IM-… and NORMAL2-IM-… names) and the two of patient IM-0437 from its train/;
    test/: that one person83 image (a patient in train and test), 10 other PNEUMONIA and
    20 other NORMAL images."""
    from scripts.data.manifest import make_manifest

    def copy(files, folder):
        (target / folder).mkdir(parents=True, exist_ok=True)
        for file in files:
            shutil.copy2(file, target / folder / file.name)

    pneumonia = sorted((KERMANY / "test" / "PNEUMONIA").iterdir())
    in_test = KERMANY / "test" / "PNEUMONIA" / f"{SHARED_PATIENT}_bacteria_414.jpeg"
    copy([f for f in pneumonia if f != in_test], "train/PNEUMONIA")
    copy([in_test, *sorted((KERMANY / "train" / "PNEUMONIA").iterdir())[:10]], "test/PNEUMONIA")
    normal = sorted((KERMANY / "test" / "NORMAL").iterdir())
    copy([*normal[:40], *sorted((KERMANY / "train" / "NORMAL").glob("IM-0437-*"))], "train/NORMAL")
    copy(normal[40:], "test/NORMAL")
    (target.parent / f"{target.name}.sha256").write_text(make_manifest(target))
    return target
