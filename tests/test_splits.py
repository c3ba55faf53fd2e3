"""Validation split: seeded, stratified, duplicate-aware; leakage drop policy."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import DEMO

from scripts.manifest import verify_dataset
from scripts.splits import make_split


@pytest.fixture(scope="module")
def index():
    return pd.DataFrame([vars(r) for r in verify_dataset(DEMO, "config/manifests/demo.sha256")])


def test_same_seed_same_split_other_seed_differs(index):
    first, again, other = (make_split(index, s, 0.15) for s in (1, 1, 2))
    assert first.equals(again)
    assert not first["subset"].equals(other["subset"])


def test_stratified_and_test_untouched(index):
    split = make_split(index, 1, 0.15)
    val = split[split["subset"] == "val"].groupby("label").size()
    train = index[index["split"] == "train"].groupby("label").size()
    assert ((val / train - 0.15).abs() < 0.03).all()
    assert (split.loc[split["split"] == "test", "subset"] == "test").all()


def test_identical_files_stay_on_one_side(index):
    for seed in range(5):
        split = make_split(index, seed, 0.3)
        trainval = split[split["split"] == "train"]
        sides = trainval.groupby("sha256")["subset"].nunique()
        assert (sides == 1).all()


def test_existing_val_folder_is_used(index):
    with_val = index.copy()
    with_val.loc[with_val.index[:10], "split"] = "val"
    split = make_split(with_val, 1, 0.15)
    assert (split["subset"] == "val").sum() == 10


def test_drop_policy_removes_test_copies_of_training_images(index):
    split = make_split(index, 1, 0.15, leakage="drop")
    dropped = split[split["subset"] == "dropped"]
    assert len(dropped) == 6 and (dropped["split"] == "test").all()
    assert "test/Covid/COVID-00012.jpg" in set(dropped["path"])
