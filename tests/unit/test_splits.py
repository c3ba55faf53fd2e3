"""Validation split: seeded, stratified, duplicate-aware; the val/ folder policy;
leakage drop; nested training fractions."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import DEMO

from scripts.manifest import verify_dataset
from scripts.splits import make_split, training_rows

SETTINGS = {"val_fraction": 0.15, "leakage": "warn", "val_folder": "auto", "min_val_per_class": 20}


@pytest.fixture(scope="module")
def index():
    return pd.DataFrame([vars(r) for r in verify_dataset(DEMO, "config/manifests/demo.sha256")])


def split(index, seed, **settings):
    return make_split(index, seed, {**SETTINGS, **settings})


def test_same_seed_same_split_other_seed_differs(index):
    first, again, other = (split(index, s)[0] for s in (1, 1, 2))
    assert first.equals(again)
    assert not first["subset"].equals(other["subset"])


def test_stratified_and_test_untouched(index):
    table, note = split(index, 1)
    val = table[table["subset"] == "val"].groupby("label").size()
    train = index[index["split"] == "train"].groupby("label").size()
    assert ((val / train - 0.15).abs() < 0.03).all()
    assert (table.loc[table["split"] == "test", "subset"] == "test").all()
    assert note.startswith("no val/ folder") and set(table["val_source"]) == {"held out"}


def test_identical_files_stay_on_one_side(index):
    for seed in range(5):
        table, _ = split(index, seed, val_fraction=0.3)
        trainval = table[table["split"] == "train"]
        assert (trainval.groupby("sha256")["subset"].nunique() == 1).all()


def with_val_folder(index, per_class):
    """The demo with the first ``per_class`` training images of each class moved to val/."""
    frame = index.copy()
    for _, rows in frame[frame["split"] == "train"].groupby("label"):
        frame.loc[rows.index[:per_class], "split"] = "val"
    return frame


def test_a_large_enough_val_folder_is_the_validation_set(index):
    table, note = split(with_val_folder(index, 20), 1)
    assert (table["subset"] == "val").sum() == 60 and (table.loc[table["split"] == "val", "subset"] == "val").all()
    assert set(table["val_source"]) == {"folder"} and "is the validation set" in note


def test_a_tiny_val_folder_is_merged_into_train_with_a_warning(index):
    """Kermany's val/ has 8 images per class: it must not decide every seed's selection."""
    table, note = split(with_val_folder(index, 8), 1)
    assert note.startswith("WARNING") and "data.min_val_per_class=20" in note
    assert set(table["val_source"]) == {"held out"}
    moved = table[table["split"] == "val"]
    assert set(moved["subset"]) <= {"train", "val"} and (moved["subset"] == "train").any()
    assert (table["subset"] == "val").sum() == sum(round(0.15 * n) for n in (111, 70, 70))
    kept, _ = split(with_val_folder(index, 8), 1, val_folder="use")
    assert (kept["subset"] == "val").sum() == 24


def test_drop_policy_removes_test_copies_of_training_images(index):
    table, _ = split(index, 1, leakage="drop")
    dropped = table[table["subset"] == "dropped"]
    assert len(dropped) == 6 and (dropped["split"] == "test").all()
    assert "test/Covid/COVID-00012.jpg" in set(dropped["path"])


def test_training_fractions_are_stratified_and_nested(index):
    table, _ = split(index, 3)
    train_counts = table[table["subset"] == "train"].groupby("label").size()
    subsets = {f: set(table["path"].iloc[training_rows(table, f)]) for f in (0.1, 0.25, 0.5, 1.0)}
    assert subsets[0.1] < subsets[0.25] < subsets[0.5] < subsets[1.0]
    assert subsets[1.0] == set(table.loc[table["subset"] == "train", "path"])
    tenth = table[table["path"].isin(subsets[0.1])].groupby("label").size()
    assert tenth.to_dict() == {label: round(0.1 * n) for label, n in train_counts.items()}
    other_seed, _ = split(index, 4)
    assert set(other_seed["path"].iloc[training_rows(other_seed, 0.1)]) != subsets[0.1]
