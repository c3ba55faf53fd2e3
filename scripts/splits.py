"""Seeded, stratified validation split and nested training subsets; the test data is
never used for selection.

Byte-identical files are kept on the same side of the split (grouped by SHA256) so
the split itself cannot leak duplicates from train into validation. Which test images
``leakage: drop`` leaves out depends on the training pool (train and val, before the
seeded hold-out) only, so every seed has the same test set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def use_val_folder(index: pd.DataFrame, policy: str, min_per_class: int) -> tuple[bool, str]:
    """Whether the dataset's own ``val/`` folder is the validation set, and why.

    A handful of validation images (Kermany's ``val/`` has 8 per class) would decide
    early stopping and model selection for every seed; ``auto`` then merges them into
    train and holds out a seeded, stratified share instead.
    """
    val = index[index["split"] == "val"]
    if val.empty:
        return False, "no val/ folder: a seeded, stratified share of train is held out"
    if policy == "use":
        return True, "the val/ folder is the validation set (data.val_folder: use)"
    if policy == "merge":
        return False, "the val/ folder was merged into train (data.val_folder: merge)"
    classes = sorted(index.loc[index["split"] == "train", "label"].unique())
    counts = val["label"].value_counts().reindex(classes, fill_value=0)
    if counts.min() >= min_per_class:
        return True, f"the val/ folder is the validation set (at least {min_per_class} images per class)"
    return False, (
        f"WARNING: the val/ folder has only {dict(counts)} images per class, fewer than "
        f"data.min_val_per_class={min_per_class}: merged into train; a seeded, stratified share "
        "of train is held out instead (set data.val_folder: use to keep it)"
    )


def make_split(index: pd.DataFrame, seed: int, settings: dict,
               near_copies: frozenset[str]) -> tuple[pd.DataFrame, str]:
    """Assign every image of ``index`` (path, split, label, sha256) to a subset.

    ``settings`` are the config's ``data`` section (``val_fraction``, ``leakage``,
    ``val_folder``, ``min_val_per_class``). ``leakage="drop"`` moves to subset
    ``dropped`` the test images that are copies of a training-pool image (byte-identical,
    or one of ``near_copies``: the test paths the near-duplicate check flagged) and the
    validation images byte-identical to a training image. Training images get
    ``train_rank``, their seeded order within their class: the first
    ``round(f · n_class)`` of each class form the nested training fraction ``f``.
    Returns the table and a sentence on where validation comes from.
    """
    frame = index.copy()
    keep_val, note = use_val_folder(frame, settings["val_folder"], settings["min_val_per_class"])
    frame["subset"] = frame["split"].replace({} if keep_val else {"val": "train"})
    if not keep_val:
        _hold_out(frame, np.random.default_rng(seed), settings["val_fraction"])
    if settings["leakage"] == "drop":
        frame.loc[_test_copies(frame, near_copies) | _val_copies(frame), "subset"] = "dropped"
    frame["train_rank"] = _train_ranks(frame, np.random.default_rng([seed, 1]))
    frame["val_source"] = "folder" if keep_val else "held out"
    return frame[["path", "label", "sha256", "split", "subset", "train_rank", "val_source"]], note


def _test_copies(frame: pd.DataFrame, near_copies: frozenset[str]) -> pd.Series:
    """Test images byte-identical to any image of the training pool, or near copies: the
    same for every seed, as the pool is train and val before the hold-out."""
    test = frame["split"] == "test"
    pool_hashes = set(frame.loc[~test, "sha256"])
    return test & (frame["sha256"].isin(pool_hashes) | frame["path"].isin(near_copies))


def _val_copies(frame: pd.DataFrame) -> pd.Series:
    train_hashes = set(frame.loc[frame["subset"] == "train", "sha256"])
    return (frame["subset"] == "val") & frame["sha256"].isin(train_hashes)


def _hold_out(frame: pd.DataFrame, rng: np.random.Generator, val_fraction: float) -> None:
    for _, rows in frame[frame["subset"] == "train"].groupby("label", sort=True):
        groups = rows.groupby("sha256", sort=True).groups
        keys = list(groups)
        rng.shuffle(keys)
        wanted = max(1, round(val_fraction * len(rows)))
        taken = 0
        for key in keys:
            if taken >= wanted or len(keys) < 2:
                break
            frame.loc[groups[key], "subset"] = "val"
            taken += len(groups[key])


def _train_ranks(frame: pd.DataFrame, rng: np.random.Generator) -> pd.Series:
    ranks = pd.Series(-1, index=frame.index)
    for _, rows in frame[frame["subset"] == "train"].groupby("label", sort=True):
        ranks[rows.index] = rng.permutation(len(rows))
    return ranks


def training_rows(split_table: pd.DataFrame, fraction: float) -> np.ndarray:
    """Positions of the training images of the nested subset ``fraction`` (per class
    the ``round(fraction · n)`` lowest ranks, at least one)."""
    train = split_table["subset"].to_numpy() == "train"
    keep = np.zeros(len(split_table), dtype=bool)
    labels, ranks = split_table["label"].to_numpy(), split_table["train_rank"].to_numpy()
    for label in np.unique(labels[train]):
        in_class = train & (labels == label)
        keep |= in_class & (ranks < max(1, round(fraction * in_class.sum())))
    return np.flatnonzero(keep)
