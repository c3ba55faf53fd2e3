"""Validation split: seeded, stratified, duplicate-aware; the val/ folder policy;
leakage drop (the same test set for every seed); nested training fractions."""

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


# The demo's test images that are re-encoded copies of training images (tests/unit/test_manifest.py finds them).
REENCODED = frozenset({"test/Covid/0112.jpg", "test/Covid/0100.jpeg",
                       "test/Covid/auntminnie-2020_01_31_20_24_2322_2020_01_31_x-ray_coronavirus_US.jpg"})


def split(index, seed, near_copies=REENCODED, **settings):
    return make_split(index, seed, {**SETTINGS, **settings}, near_copies)


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


def test_drop_policy_removes_test_copies_of_training_images_the_same_for_every_seed(index):
    """6 byte-identical and 3 re-encoded copies, whichever side of the hold-out their
    training twin falls on."""
    tables = [split(index, seed, leakage="drop")[0] for seed in range(1, 6)]
    dropped = tables[0][tables[0]["subset"] == "dropped"]
    assert len(dropped) == 9 and (dropped["split"] == "test").all()
    assert {"test/Covid/COVID-00012.jpg", *REENCODED} <= set(dropped["path"])
    for table in tables[1:]:
        assert table.loc[table["split"] == "test", ["path", "subset"]].equals(
            tables[0].loc[tables[0]["split"] == "test", ["path", "subset"]])
    twins = index.loc[index["path"].isin(["train/Covid/COVID-00012.jpg", "train/Covid/090.jpeg"]), "path"]
    assert any((t.loc[twins.index, "subset"] == "val").any() for t in tables)  # a seed holds out a twin


def test_warn_policy_keeps_every_test_image(index):
    table, _ = split(index, 1, leakage="warn")
    assert (table.loc[table["split"] == "test", "subset"] == "test").all() and "dropped" not in set(table["subset"])


def test_drop_policy_drops_a_val_folder_image_identical_to_a_training_image(index):
    frame = with_val_folder(index, 20)
    copied = frame.index[frame["split"] == "val"][0]
    frame.loc[copied, "sha256"] = frame.loc[frame["split"] == "train", "sha256"].iloc[0]
    table, _ = split(frame, 1, near_copies=frozenset(), leakage="drop")
    dropped = table[table["subset"] == "dropped"]
    assert list(dropped.index[dropped["split"] == "val"]) == [copied] and (dropped["split"] == "test").sum() == 6


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
