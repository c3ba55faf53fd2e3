"""Dataset integrity: SHA256 manifests, layout scan, duplicate and leakage detection.

A dataset root is laid out like the Kaggle chest-xray-pneumonia set:
``ROOT/<split>/<class>/<image>`` with split one of train, val (optional), test.
The manifest is ``sha256sum`` output: ``<sha256>  <relative path>`` per line.

Leakage is a test image that is a copy of an image of the training pool (train and
val): byte-identical (same SHA256) or the same radiograph re-encoded, which only the
fingerprints of :mod:`scripts.data.external` find (:func:`leakage_table`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from scripts.common.fsutil import file_digest
from scripts.data.external import NEAR_DUPLICATE_CORRELATION, copy_pairs, near_duplicates

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
MANIFEST_LINE = re.compile(r"^(?P<sha>[0-9a-fA-F]{64}) [ *](?P<path>.+)$")


class DataError(Exception):
    """Bad dataset or manifest; the message names every offending file."""


@dataclass(frozen=True)
class ImageRecord:
    path: str  # relative to the dataset root, POSIX separators
    split: str
    label: str
    sha256: str


def _problem_list(title: str, items: list[str], limit: int = 50) -> str:
    shown = "\n".join(f"  - {item}" for item in items[:limit])
    more = f"\n  … and {len(items) - limit} more" if len(items) > limit else ""
    return f"{title} ({len(items)}):\n{shown}{more}"


def scan_dataset(root: str | Path) -> list[str]:
    """Relative paths of every data file under ``root``'s split folders.

    Hidden files (``.DS_Store``, editor swap files) are ignored; anything else that
    is not ``<split>/<class>/<file>`` with an image suffix is an error.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset root {root} does not exist or is not a folder")
    found, problems = [], []
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        for path in sorted(split_dir.rglob("*")):
            rel = path.relative_to(root)
            if any(part.startswith(".") for part in rel.parts) or path.is_dir():
                continue
            if len(rel.parts) != 3:
                problems.append(f"{rel}: expected <split>/<class>/<image>")
            elif path.suffix.lower() not in IMAGE_SUFFIXES:
                problems.append(
                    f"{rel}: unsupported format {path.suffix or '(no suffix)'!r}; "
                    f"convert to one of {sorted(IMAGE_SUFFIXES)} (DICOM: export PNG first)"
                )
            else:
                found.append(rel.as_posix())
    if problems:
        raise DataError(_problem_list(f"unusable files in dataset {root}", problems))
    if not found:
        raise DataError(f"dataset {root} has no images under {'/, '.join(SPLITS)}/<class>/")
    return found


def make_manifest(root: str | Path) -> str:
    """Manifest text for every image under ``root`` (sorted, sha256sum format)."""
    lines = [f"{file_digest(Path(root) / rel)}  {rel}" for rel in scan_dataset(root)]
    return "\n".join(lines) + "\n"


def read_manifest(manifest: str | Path) -> dict[str, str]:
    """Map relative path -> sha256, rejecting malformed lines and escaping paths."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise DataError(
            f"manifest {manifest} not found; create it with "
            f"`python -m scripts manifest <dataset root> -o {manifest}`"
        )
    entries, problems = {}, []
    for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = MANIFEST_LINE.match(line)
        if not match:
            problems.append(f"line {number}: not '<64 hex sha256>  <path>': {line[:80]!r}")
            continue
        rel = PurePosixPath(match["path"])
        if rel.is_absolute() or ".." in rel.parts:
            problems.append(f"line {number}: path {str(rel)!r} points outside the dataset root")
        elif str(rel) in entries:
            problems.append(f"line {number}: {rel} is listed twice")
        else:
            entries[str(rel)] = match["sha"].lower()
    if problems:
        raise DataError(_problem_list(f"malformed manifest {manifest}", problems))
    return entries


def verify_dataset(root: str | Path, manifest: str | Path) -> list[ImageRecord]:
    """Recompute every hash; any mismatch, missing or unlisted file is an error."""
    expected = read_manifest(manifest)
    present = scan_dataset(root)
    missing = sorted(set(expected) - set(present))
    unlisted = sorted(set(present) - set(expected))
    records, changed = [], []
    for rel in present:
        if rel not in expected:
            continue
        actual = file_digest(Path(root) / rel)
        if actual != expected[rel]:
            changed.append(f"{rel}: manifest {expected[rel][:12]}…, file {actual[:12]}…")
        split, label, _ = rel.split("/")
        records.append(ImageRecord(rel, split, label, actual))
    problems = []
    if changed:
        problems.append(_problem_list("files whose content changed since the manifest", changed))
    if missing:
        problems.append(_problem_list("files in the manifest but missing on disk", missing))
    if unlisted:
        problems.append(_problem_list("files on disk but not in the manifest", unlisted))
    if problems:
        raise DataError(
            f"dataset {root} does not match manifest {manifest}.\n"
            + "\n".join(problems)
            + "\nIf the change is intended, regenerate the manifest with "
            f"`python -m scripts manifest {root} -o {manifest}` and review the diff."
        )
    return records


def check_classes(records: list[ImageRecord]) -> list[str]:
    """Class names from train; every split must use only those, train needs ≥ 2."""
    by_split = defaultdict(set)
    for record in records:
        by_split[record.split].add(record.label)
    if "train" not in by_split:
        raise DataError("dataset has no train/ split")
    if "test" not in by_split:
        raise DataError("dataset has no test/ split; the study reports test metrics only")
    classes = sorted(by_split["train"])
    if len(classes) < 2:
        raise DataError(f"train/ has only the class {classes}; at least two are needed")
    for split, labels in by_split.items():
        extra = sorted(labels - set(classes))
        if extra:
            raise DataError(f"{split}/ has classes not in train/: {extra}; no model can learn them")
    return classes


def find_duplicates(records: list[ImageRecord]) -> list[dict]:
    """Groups of byte-identical files, flagged when they span more than one split."""
    groups = defaultdict(list)
    for record in records:
        groups[record.sha256].append(record)
    duplicates = []
    for sha, members in sorted(groups.items()):
        if len(members) < 2:
            continue
        splits = sorted({m.split for m in members})
        duplicates.append(
            {
                "sha256": sha,
                "paths": sorted(m.path for m in members),
                "splits": splits,
                "cross_split": len(splits) > 1,
                "labels": sorted({m.label for m in members}),
            }
        )
    return duplicates


def class_counts(records: list[ImageRecord]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for record in records:
        counts[record.split][record.label] += 1
    return {split: dict(sorted(c.items())) for split, c in sorted(counts.items())}


def most_similar(queries: pd.DataFrame, query_prints: np.ndarray, references: pd.DataFrame,
                 reference_prints: np.ndarray) -> pd.DataFrame:
    """Per query image (``path``, ``label``) the most correlated reference image
    (``most_similar``, ``most_similar_split``), the ``correlation`` of their fingerprints
    (rows in the order of their tables) and whether it is a ``near_duplicate``."""
    where, correlation = near_duplicates(query_prints, reference_prints)
    matched = references.iloc[np.maximum(where, 0)]
    return pd.DataFrame({"path": queries["path"].to_numpy(), "label": queries["label"].to_numpy(),
                         "most_similar": matched["path"].to_numpy(),
                         "most_similar_split": matched["split"].to_numpy(),
                         "correlation": np.round(correlation, 4),
                         "near_duplicate": correlation >= NEAR_DUPLICATE_CORRELATION})


def leakage_table(index: pd.DataFrame, prints: np.ndarray) -> pd.DataFrame:
    """Per test image of ``index`` (path, split, label, sha256; ``prints``: a fingerprint
    per row) its most similar image of the training pool (train and val; see
    :func:`most_similar`) and whether it is ``identical`` to a pool image (same SHA256).
    A test image is a copy when it is identical or a near-duplicate. Where ``index`` has
    a ``group`` (patient) per image, each test image's ``group`` and whether that group
    also has images in the training pool (``group_in_training``)."""
    test = (index["split"] == "test").to_numpy()
    table = most_similar(index[test], prints[test], index[~test], prints[~test])
    pool_hashes = set(index.loc[~test, "sha256"])
    table.insert(len(table.columns) - 1, "identical", index.loc[test, "sha256"].isin(pool_hashes).to_numpy())
    groups = index["group"] if "group" in index.columns else pd.Series("", index=index.index)
    table["group"] = groups[test].to_numpy()
    table["group_in_training"] = table["group"].isin(set(groups[~test]) - {""}).to_numpy()
    return table


def copies_within(index: pd.DataFrame, prints: np.ndarray) -> pd.DataFrame:
    """The pairs of near-copies (:func:`scripts.data.external.copy_pairs`; byte-identical
    files included) within the training pool (train and val) and within the test set of
    ``index`` (``prints``: a fingerprint per row): ``path``, ``copy_of``, ``correlation``
    and ``within`` (``training pool`` or ``test set``)."""
    found = []
    for within, rows in (("training pool", index["split"] != "test"), ("test set", index["split"] == "test")):
        paths = index.loc[rows, "path"].to_numpy()
        found += [(paths[i], paths[j], round(r, 4), within) for i, j, r in copy_pairs(prints[rows.to_numpy()])]
    return pd.DataFrame(found, columns=["path", "copy_of", "correlation", "within"])


def copies_of(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a :func:`leakage_table` table that are copies of a training-pool image."""
    return table[table["identical"] | table["near_duplicate"]]


def groups_in_training(table: pd.DataFrame) -> pd.DataFrame:
    """Per group (patient) of a :func:`leakage_table` table with images in the test set
    and in the training pool: its test images (``n_test``, ``paths``)."""
    shared = table[table["group_in_training"]]
    return (shared.groupby("group", sort=True)["path"].agg(n_test="size", paths=" ".join).reset_index()
            if len(shared) else pd.DataFrame(columns=["group", "n_test", "paths"]))


def leakage_error(root: str | Path, copies: pd.DataFrame, shared: pd.DataFrame) -> DataError:
    """The ``leakage: fail`` error naming every test image that is a copy (``copies``:
    rows of :func:`copies_of`) with its training-pool partner, and every patient with
    test and training images (``shared``: :func:`groups_in_training`)."""
    pairs = [f"{row.path} ≈ {row.most_similar} (r = {row.correlation:.2f}, "
             f"{'byte-identical' if row.identical else 're-encoded'})" for row in copies.itertuples()]
    patients = [f"{row.group}: {row.paths}" for row in shared.itertuples()]
    found = []
    if pairs:
        found.append(_problem_list(f"test images of {root} that are copies of training or validation images "
                                   "(leakage)", pairs))
    if patients:
        found.append(_problem_list(f"patients of {root} with test images and training or validation images "
                                   "(their test images)", patients))
    return DataError("\n".join(found) + "\nRemove them, or set data.leakage: drop (leave them out of the test set) "
                     "or warn (keep them, flagged in the report).")
