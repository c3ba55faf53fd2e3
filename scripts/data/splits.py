"""Seeded, stratified validation split and nested training subsets; the test data is
never used for selection.

Copies are kept on the same side of the split so that the split itself cannot leak a
radiograph from train into validation: byte-identical files (same SHA256) and the
near-copy pairs the leakage step found (re-encoded, cropped, shifted, rotated, mirrored or
inverted; :func:`scripts.data.manifest.copies_within`) form one *unit* with the images of
their group (patient). The test bootstrap resamples a unit of test images whole
(:func:`groups_of_test_images`). Which test images
``leakage: drop`` leaves out depends on the training pool (train and val, before the
seeded hold-out) only, so every seed has the same test set.

Where a dataset declares groups (patients: ``datasets.<name>.groups``, a file-name
pattern and/or a table, :func:`image_groups`), the hold-out keeps every group on one
side (:func:`_grouped_hold_out`); without groups each image counts as its own patient.
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from scripts.data.manifest import DataError

# The grouped hold-out's validation share is m/n of the groups with at most this many folds n.
MAX_FOLDS = 20


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


def make_split(index: pd.DataFrame, seed: int, settings: dict, near_copies: frozenset[str],
               copy_pairs: list[tuple[str, str]]) -> tuple[pd.DataFrame, str]:
    """Assign every image of ``index`` (path, split, label, sha256) to a subset.

    ``settings`` are the config's ``data`` section (``val_fraction``, ``leakage``,
    ``val_folder``, ``min_val_per_class``). ``leakage="drop"`` moves to subset
    ``dropped`` the test images that are copies of a training-pool image (byte-identical,
    or one of ``near_copies``: the test paths the near-duplicate check flagged) and the
    validation images that are copies of a training image (byte-identical, or linked by
    ``copy_pairs``: the near-copy pairs within the training pool and within the test set).
    Every image's ``unit`` links it with its copies and its group (:func:`copy_units`): the
    held-out validation set takes whole units. Training images get
    ``train_rank``, their seeded order within their class: the first
    ``round(f · n_class)`` of each class form the nested training fraction ``f``. Where
    ``index`` has a ``group`` per image (:func:`image_groups`), the hold-out is
    StratifiedGroupKFold over the units. Returns the table (with each image's ``group``,
    empty without groups, and ``unit``) and a sentence on where validation comes from.
    """
    frame = index.copy()
    keep_val, note = use_val_folder(frame, settings["val_folder"], settings["min_val_per_class"])
    frame["subset"] = frame["split"].replace({} if keep_val else {"val": "train"})
    frame["group"] = frame.get("group", "")
    frame["unit"] = copy_units(frame, copy_pairs)
    if not keep_val and has_groups(frame):
        _grouped_hold_out(frame, seed, settings["val_fraction"])
    elif not keep_val:
        _hold_out(frame, np.random.default_rng(seed), settings["val_fraction"])
    if settings["leakage"] == "drop":
        frame.loc[_test_copies(frame, near_copies) | _val_copies(frame), "subset"] = "dropped"
    frame["train_rank"] = _train_ranks(frame, np.random.default_rng([seed, 1]))
    frame["val_source"] = "folder" if keep_val else "held out"
    return frame[["path", "label", "sha256", "split", "subset", "train_rank", "val_source", "group", "unit"]], note


def _test_copies(frame: pd.DataFrame, near_copies: frozenset[str]) -> pd.Series:
    """Test images byte-identical to any image of the training pool, or near copies: the
    same for every seed, as the pool is train and val before the hold-out."""
    test = frame["split"] == "test"
    pool_hashes = set(frame.loc[~test, "sha256"])
    return test & (frame["sha256"].isin(pool_hashes) | frame["path"].isin(near_copies))


def _val_copies(frame: pd.DataFrame) -> pd.Series:
    """Validation images in a unit with a training image (only a val/ folder used as it
    is can split a unit)."""
    train_units = set(frame.loc[frame["subset"] == "train", "unit"])
    return (frame["subset"] == "val") & frame["unit"].isin(train_units)


def _hold_out(frame: pd.DataFrame, rng: np.random.Generator, val_fraction: float) -> None:
    for _, rows in frame[frame["subset"] == "train"].groupby("label", sort=True):
        groups = rows.groupby("unit", sort=True).groups
        keys = list(groups)
        rng.shuffle(keys)
        wanted = max(1, round(val_fraction * len(rows)))
        taken = 0
        for key in keys:
            if taken >= wanted or len(keys) < 2:
                break
            frame.loc[groups[key], "subset"] = "val"
            taken += len(groups[key])


def has_groups(index: pd.DataFrame) -> bool:
    """Whether ``index`` names a group (patient) for its images (column ``group``,
    non-empty); without, every image is taken to be its own patient."""
    return "group" in index.columns and bool(index["group"].ne("").any())


def _grouped_hold_out(frame: pd.DataFrame, seed: int, val_fraction: float) -> None:
    """Hold out whole groups for validation, stratified by class: scikit-learn's
    StratifiedGroupKFold over the training pool, the first m of its n folds where m/n
    is ``val_fraction`` as a fraction with n ≤ :data:`MAX_FOLDS` (0.15 → 3/20, 0.1 → 1/10).
    A group and any copy of its images in another group are one unit (:func:`copy_units`),
    so neither a patient nor a copy straddles the split."""
    from sklearn.model_selection import StratifiedGroupKFold

    pool = frame[frame["subset"] == "train"]
    units = pd.factorize(pool["unit"])[0]
    n_units = int(units.max()) + 1
    if n_units < 2:
        raise DataError(f"the training pool has {n_units} group (patient): none can be held out for validation")
    share = Fraction(val_fraction).limit_denominator(min(MAX_FOLDS, n_units))
    n_folds, n_held = max(2, share.denominator), max(1, share.numerator)
    folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    held = [rows for fold, (_, rows) in enumerate(folds.split(pool, pool["label"], units)) if fold < n_held]
    frame.loc[pool.index[np.concatenate(held)], "subset"] = "val"
    left = set(frame.loc[frame["subset"] == "train", "label"])
    emptied = sorted(set(pool["label"]) - left)
    if emptied:
        raise DataError(f"the grouped validation hold-out (seed {seed}) left no training image of the classes "
                        f"{emptied}: their images belong to too few groups (patients); lower data.val_fraction")


def copy_units(index: pd.DataFrame, copy_pairs: list[tuple[str, str]]) -> np.ndarray:
    """Per row of ``index`` its unit: the connected component (scipy's
    connected_components) of the graph that links the rows of one non-empty ``group``,
    the rows of one ``sha256`` and the two paths of each of ``copy_pairs``, named by its
    first group (so a patient without copies elsewhere is its own unit) or, without
    groups, by its first path."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(index)
    position = pd.Series(np.arange(n), index=index["path"].to_numpy())
    first = [np.arange(n)]
    second = [np.arange(n)]
    for column in ("group", "sha256"):
        keys = index[column].to_numpy()
        named = keys != ""
        leader = pd.Series(np.arange(n)[named]).groupby(keys[named]).transform("first").to_numpy()
        first.append(np.arange(n)[named])
        second.append(leader)
    if copy_pairs:
        a, b = zip(*copy_pairs, strict=True)
        first.append(position.loc[list(a)].to_numpy())
        second.append(position.loc[list(b)].to_numpy())
    rows, columns = np.concatenate(first), np.concatenate(second)
    graph = coo_matrix((np.ones(len(rows)), (rows, columns)), shape=(n, n))
    component = connected_components(graph, directed=False)[1]
    members = pd.DataFrame({"component": component, "group": index["group"].to_numpy(),
                            "path": index["path"].to_numpy()})
    named = members[members["group"] != ""].groupby("component")["group"].min()
    name = members.groupby("component")["path"].min()
    name.update(named)
    return name.loc[component].to_numpy()


def image_groups(dataset: str, paths: list[str], groups: dict) -> list[str]:
    """The group (patient) of each image of ``paths`` (relative to the dataset root), from
    ``groups`` (the config's ``datasets.<dataset>.groups``): its ``table`` (a CSV with the
    columns ``path`` and ``group``) where it lists the image, else the ``pattern`` searched
    in the file name (its first capture group, or the whole match without one). Without
    either, every image's group is empty (each image its own patient). An image that gets
    no group, or a table row naming no image, is an error."""
    if not groups:
        return [""] * len(paths)
    key = f"datasets.{dataset}.groups"
    listed = _group_table(key, groups["table"], paths) if groups.get("table") else {}
    pattern = re.compile(groups["pattern"]) if groups.get("pattern") else None
    found, unmatched = [], []
    for path in paths:
        group = listed.get(path) or (_pattern_group(pattern, path) if pattern else "")
        found.append(group)
        if not group:
            unmatched.append(path)
    if unmatched:
        where = " and ".join(f"{name} {groups[name]!r}" for name in ("table", "pattern") if groups.get(name))
        shown = "\n".join(f"  - {path}" for path in unmatched[:20])
        more = f"\n  … and {len(unmatched) - 20} more" if len(unmatched) > 20 else ""
        raise DataError(f"{key}: {len(unmatched)} image(s) get no group from {where}:\n{shown}{more}")
    return found


def _pattern_group(pattern: re.Pattern, path: str) -> str:
    match = pattern.search(PurePosixPath(path).name)
    if not match:
        return ""
    return (match.group(1) if pattern.groups else match.group(0)) or ""


def _group_table(key: str, table: str, paths: list[str]) -> dict[str, str]:
    """The ``path`` → ``group`` mapping of a group table; unknown paths, repeated paths
    and empty groups are errors naming the table."""
    if not Path(table).is_file():
        raise DataError(f"{key}.table: {table} does not exist")
    frame = pd.read_csv(table, dtype=str, keep_default_na=False)
    missing = sorted({"path", "group"} - set(frame.columns))
    if missing:
        raise DataError(f"{key}.table: {table} has no column {missing}; it needs the columns path and group")
    problems = [f"{path}: listed more than once" for path in sorted(set(frame.loc[frame["path"].duplicated(), "path"]))]
    problems += [f"{path}: not an image of the dataset" for path in sorted(set(frame["path"]) - set(paths))]
    problems += [f"{path}: empty group" for path in frame.loc[frame["group"].str.strip().eq(""), "path"]]
    if problems:
        shown = "\n".join(f"  - {problem}" for problem in problems[:20])
        raise DataError(f"{key}.table: {table} has {len(problems)} bad row(s):\n{shown}")
    return dict(zip(frame["path"], frame["group"].str.strip(), strict=True))


def groups_of_test_images(split_table: pd.DataFrame, paths: list[str]) -> np.ndarray | None:
    """The unit of each test image of ``paths`` (in that order) from a split table
    (:func:`make_split`; the test set and its units are the same for every seed): its
    group (patient) with its copies, for a bootstrap that resamples units whole; None
    where every test image is a unit of its own (no groups, no copies)."""
    if "unit" not in split_table.columns:  # a split written before units: groups only
        return split_table.set_index("path")["group"].loc[list(paths)].to_numpy() if has_groups(split_table) else None
    units = split_table.set_index("path")["unit"].loc[list(paths)]
    if not has_groups(split_table) and not units.duplicated().any():
        return None
    return units.to_numpy()


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
