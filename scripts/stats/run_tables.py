"""What a finished run left behind, read as table rows and arrays.

* :func:`run_row`: one row of the ``runs`` table (test and validation metrics, cost,
  provenance) from the run's ``train.json`` and ``metrics.json`` (:func:`read_run`);
* :func:`read_predictions`: a predictions table as label indices and probabilities;
* :func:`read_shortcut_score`: the run's Grad-CAM maps reduced to its shortcut score;
* :func:`software`: the package versions the finished runs recorded;
* :func:`csv_boolean`: a boolean cell of a table pandas wrote;
* :func:`test_units`: the unit (patient with its copies) of each test image, from a split.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd

from scripts.common import fsutil
from scripts.data.splits import groups_of_test_images
from scripts.stats import shortcut
from scripts.stats.stats import METRICS

# The columns that name a configuration; its seeds are the runs that share them.
CONFIG = ["dataset", "model", "strategy", "weights", "fraction"]
COSTS = ["train_seconds", "seconds_per_epoch", "images_per_second", "trainable_params", "total_params",
         "backbone_trainable_share", "epochs_run", "peak_rss_mb", "n_train"]


def config_key(row) -> tuple:
    """The configuration a run or table row belongs to."""
    return tuple(row[key] for key in CONFIG)


def read_run(run: dict, run_files: dict) -> dict | None:
    """train.json and metrics.json of a finished run, None when it did not finish."""
    folder = Path(run["dir"])
    info_file, metrics_file = folder / run_files["info"], folder / run_files["metrics"]
    if not (info_file.exists() and metrics_file.exists()):
        return None
    return {"info": fsutil.read_json(info_file), "metrics": fsutil.read_json(metrics_file)}


def run_row(run: dict, files: dict | None) -> dict:
    """Metrics, cost and provenance of one planned run; ``status=missing`` when it did not finish."""
    row = {key: run[key] for key in (*CONFIG, "seed", "dir", "log_dir")}
    row["fraction"] = float(row["fraction"])
    if files is None:
        return {**row, "status": "missing"}
    info, metrics = files["info"], files["metrics"]
    env = info["environment"]
    return {
        **row,
        "status": "ok",
        **{m: metrics["test"].get(m) for m in METRICS},
        **{f"val_{m}": metrics["validation"].get(m) for m in METRICS},
        **{c: info.get(c) for c in COSTS},
        "weights_source": info["weights"]["source"],
        "weights_sha256": info["weights"].get("sha256"),
        # no published hash: the SHA256 is the one the file's first download recorded
        "weights_trust_on_first_use": bool(info["weights"].get("trust_on_first_use")),
        "host": env["host"],
        "slurm_job_id": env["slurm_job_id"],
        "cuda_visible_devices": env["cuda_visible_devices"],
        "devices": ",".join(info["devices"]),
        "threads": info["threads"],
        "precision_policy": info["precision_policy"],
        "training_input": training_input(info),
        "best_epoch": info["best_epoch"],
        "software": json.dumps(env["packages"], sort_keys=True),
    }


def training_input(info: dict) -> str:
    """How the run saw its training images (cached features trade augmentation for speed)."""
    if info["strategy"] == "linear_probe":
        return "cached features (logistic regression)"
    source = "cached features" if info.get("feature_cache") else "features"
    parts = []
    if info["strategy"] in ("frozen", "partial", "full"):
        parts.append(f"head on {source}" + (" (reused)" if info.get("feature_cache_reused") else ""))
    if info["augmentation_applied"]:
        parts.append("augmented images")
    return ", then ".join(parts) or "images, no augmentation"


def read_predictions(path: str | Path, classes: list[str], dataset: str | None = None,
                     excluded: frozenset = frozenset()) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A predictions table as ``(paths, label indices, probabilities)``, sorted by path.
    ``dataset``: only that external dataset's rows (external predictions); ``excluded``:
    paths left out.

    The csv module, not pandas: a 10,000-run grid reads 10,000 small tables, and
    ``pandas.read_csv`` costs 1.5 ms of set-up each (measured), 15 s in all.
    """
    with open(path, newline="", encoding="utf-8") as handle:
        rows = sorted((row for row in csv.DictReader(handle)
                       if (dataset is None or row["dataset"] == dataset) and row["path"] not in excluded),
                      key=lambda row: row["path"])
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index[row["label"]] for row in rows], dtype=int)
    probabilities = np.array([[float(row[f"p_{name}"]) for name in classes] for row in rows]).reshape(
        len(rows), len(classes))
    return [row["path"] for row in rows], labels, probabilities


def read_shortcut_score(gradcam_path: str | Path, box: list[float]) -> dict:
    """Mean share of Grad-CAM mass outside ``box`` over a run's test images (all-zero maps
    left out), the share of those maps with more mass outside the box than a uniform map
    (:func:`scripts.stats.shortcut.above_uniform`),
    the share of test images whose map is all zero (not scored), and the maps' resolution."""
    with np.load(gradcam_path) as saved:
        cams = saved["cams"]
    shares = shortcut.outside_share(cams, box) if len(cams) else np.array([])
    finite = shares[~np.isnan(shares)]
    height, width = cams.shape[1:3] if cams.ndim == 3 else (0, 0)
    return {"shortcut_score": float(finite.mean()) if len(finite) else np.nan,
            "shortcut_above_uniform": shortcut.above_uniform(shares, box),
            "shortcut_no_map": float(np.isnan(shares).mean()) if len(shares) else np.nan,
            "cam_cells": f"{height}x{width}", "cam_informative": shortcut.informative(height, width, box)
            if height and width else False}


def software(runs: pd.DataFrame) -> list[dict]:
    """The package versions the training jobs ran with, and how many runs used each set."""
    done = runs[runs["status"] == "ok"]
    if done.empty:
        return []
    return [{"packages": json.loads(text), "runs": int(count)}
            for text, count in done["software"].value_counts().items()]


def csv_boolean(text: str) -> bool | None:
    """A boolean as ``DataFrame.to_csv`` writes it (``True``, ``False``; empty for None or NaN):
    a ``converters`` entry of ``pandas.read_csv``."""
    return {"True": True, "False": False, "": None}[text]


def test_units(plan: dict, name: str, paths: list[str]) -> np.ndarray | None:
    """The test bootstrap's unit of each test image of dataset ``name`` (see
    :func:`read_test_groups`). The workflow always has the split (an input of the steps
    that compare); a study put together without one, and without declared groups, draws
    each test image on its own."""
    split_path = plan["datasets"][name]["split"]
    declared = plan["config"]["datasets"][name].get("groups")
    return read_test_groups(split_path, paths) if declared or Path(split_path).exists() else None


def read_test_groups(split_path: str, paths: list[str]) -> np.ndarray | None:
    """The unit (a group, i.e. patient, with its copies) of each test image of ``paths``,
    in that order, from the split at ``split_path`` (any seed's: the test set and its
    units are the same for all), for a test bootstrap that draws units whole; None where
    each test image is a unit of its own."""
    return groups_of_test_images(fsutil.read_table(split_path), paths)
