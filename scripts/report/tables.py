"""What the report reads: the aggregate stage's tables, and from the finished runs' and the
datasets' files what the figures and the data checks show (files named in the plan)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scripts.common import fsutil
from scripts.common.layout import RUN_FILES
from scripts.data.manifest import copies_of, groups_in_training
from scripts.data.splits import has_groups
from scripts.plan.grid import config_title, report_order
from scripts.stats.run_tables import csv_boolean

# The aggregate tables of the field's questions; a caller that has none passes nothing.
FIELD_TABLES = ("learning_curve", "external", "weights_comparison")


# Columns of the aggregate tables that hold True, False or nothing (None: e.g. not compared).
BOOLEAN_COLUMNS = ("beats", "cam_informative")


def read_tables(paths: dict[str, str]) -> dict:
    """The aggregate stage's csv tables as DataFrames and its verdict; ``paths``: a path
    per table name (``runs``, ``summary``, ``comparisons``, :data:`FIELD_TABLES`, ``verdict``).
    :data:`BOOLEAN_COLUMNS` are read as True, False or None, whatever else their column holds."""
    def csv(path):
        try:
            text = dict.fromkeys((*fsutil.NAME_COLUMNS, "slurm_job_id", "cuda_visible_devices", "cam_cells"), str)
            return pd.read_csv(path, dtype=text,
                               converters={column: csv_boolean for column in BOOLEAN_COLUMNS},
                               keep_default_na=False, na_values=[""])
        except pd.errors.EmptyDataError:  # no finished run: the table has no columns
            return pd.DataFrame()

    return {**{name: csv(path) for name, path in paths.items() if name != "verdict"},
            "verdict": fsutil.read_json(paths["verdict"])}


def of_dataset(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """The rows of dataset ``name`` of an aggregate table (a table without rows has no columns)."""
    return frame[frame["dataset"] == name] if len(frame) else frame


def read_optional_json(path: str) -> dict | None:
    return fsutil.read_json(path) if Path(path).exists() else None


CURVE_SEEDS = 10  # seeds drawn per panel of the ROC, PR and training curves


def load_configs(plan: dict, runs: pd.DataFrame, classes: list[str]) -> list[dict]:
    """Per configuration: the confusion matrices of all its seeds, the predictions and
    histories of its first ``CURVE_SEEDS`` (a 150-seed grid would draw 150 curves a
    panel), and the Grad-CAM maps of its first finished seed (files named by the plan)."""
    files = RUN_FILES
    configs = []
    for _, group in runs.groupby(["model", "strategy", "weights", "fraction"], sort=False):
        first = group.iloc[0]
        config = {"key": {k: first[k] for k in ("model", "strategy", "weights", "fraction")},
                  "title": config_title(first), "predictions": [], "confusion": [], "histories": []}
        for position, (_, row) in enumerate(group.sort_values("seed").iterrows()):
            folder = Path(row["dir"])
            metrics = fsutil.read_json(folder / files["metrics"])
            config["confusion"].append(metrics["test"]["confusion_matrix"])
            if position >= CURVE_SEEDS:
                continue
            predictions = fsutil.read_table(folder / files["predictions"])
            probabilities = predictions[[f"p_{c}" for c in classes]].to_numpy()
            y_true = predictions["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
            config["predictions"].append((y_true, probabilities))
            config["histories"].append((row["seed"], pd.read_csv(folder / files["history"])))
            if position == 0:
                with np.load(folder / files["gradcam"]) as saved:
                    config["cams"] = dict(zip(saved["paths"], saved["cams"], strict=True))
                config["cam_seed"], config["cam_layer"] = row["seed"], metrics["gradcam_layer"]
                config["table"] = predictions.set_index("path")
        configs.append(config)
    return sorted(configs, key=lambda c: report_order(c["key"]))


def split_counts(path: str) -> dict:
    """Images per subset and class in the first seed's split, where validation came
    from, and the patients per subset where the dataset declares groups."""
    if not Path(path).exists():
        return {"counts": {}, "val_source": None, "n_test": None, "groups": None}
    split = fsutil.read_table(path)
    counts = split.groupby(["subset", "label"]).size().unstack(fill_value=0)
    return {"counts": {subset: {k: int(v) for k, v in row.items()} for subset, row in counts.iterrows()},
            "val_source": split["val_source"].iloc[0],
            "n_test": int((split["subset"] == "test").sum()),
            "groups": group_counts(split)}


def group_counts(split: pd.DataFrame) -> dict[str, int] | None:
    """Groups (patients) per subset of a split table; None where the dataset declares
    none (each image is then taken to be its own patient)."""
    if not has_groups(split):
        return None
    return {subset: int(n) for subset, n in split.groupby("subset", sort=False)["group"].nunique().items()}


def leakage_section(path: str, policy: str) -> dict | None:
    """The test images that are copies of a training or validation image (byte-identical
    or re-encoded), with their partners, and what ``data.leakage`` (``policy``) did with
    them; the groups (patients) with test and training images; None where the check did
    not run."""
    if not Path(path).exists():
        return None
    table = fsutil.read_table(path)
    copies = copies_of(table)
    return {"policy": policy, "n_checked": len(table), "copies": records(copies),
            "n_identical": int(copies["identical"].sum()),
            "shared_groups": records(groups_in_training(table)),
            "n_test_groups": int(table.loc[table["group"].ne(""), "group"].nunique())}


def records(frame: pd.DataFrame) -> list[dict]:
    """DataFrame rows as dicts with NaN as None (the template tests for None)."""
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
            for row in frame.to_dict("records")]
