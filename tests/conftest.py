"""Shared fixtures: real demo images, small dataset copies and a tiny real study."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
DEMO = PROJECT / "resources" / "demo" / "covid19-cxr-3class"
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
    from scripts.manifest import make_manifest

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


def write_config(path: Path, dataset: Path, **overrides) -> Path:
    import yaml

    config = {
        "datasets": {"tiny": {"path": str(dataset), "manifest": f"{dataset}.sha256"}},
        "models": ["scratch_cnn", "vgg16"],
        "strategies": ["scratch", "partial"],
        "seeds": [1],
        "weights": "none",
        "training": {"image_size": 32, "batch_size": 16, "epochs": 2, "warmup_epochs": 1,
                     "learning_rate": 1e-3, "finetune_learning_rate": 1e-4,
                     "partial_layers": 4, "early_stopping_patience": 0},
        "gradcam": {"images_per_class": 2},
    }
    for key, value in overrides.items():
        config[key] = value
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
