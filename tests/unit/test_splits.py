"""Validation split: seeded, stratified, duplicate-aware; the val/ folder policy;
leakage drop (the same test set for every seed); nested training fractions; patient
groups (from file names or a table) kept on one side of the hold-out."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import DEMO, KERMANY_GROUPS, SHARED_PATIENT, kermany_patients

from scripts.data.manifest import DataError, verify_dataset
from scripts.data.splits import groups_of_test_images, image_groups, make_split, training_rows

SETTINGS = {"val_fraction": 0.15, "leakage": "warn", "val_folder": "auto", "min_val_per_class": 20}


@pytest.fixture(scope="module")
def index():
    return pd.DataFrame([vars(r) for r in verify_dataset(DEMO, "config/manifests/demo.sha256")])


# The demo's test images that are re-encoded copies of training images (tests/unit/test_manifest.py finds them).
REENCODED = frozenset({"test/Covid/0112.jpg", "test/Covid/0100.jpeg",
                       "test/Covid/auntminnie-2020_01_31_20_24_2322_2020_01_31_x-ray_coronavirus_US.jpg"})


def split(index, seed, near_copies=REENCODED, copy_pairs=(), **settings):
    return make_split(index, seed, {**SETTINGS, **settings}, near_copies, list(copy_pairs))


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


def test_drop_policy_drops_a_val_folder_image_that_is_a_near_copy_of_a_training_image(index):
    """A val/ folder used as it is cannot keep a near-copy pair together: its copy of a
    training image is dropped, and a pair inside the folder stays."""
    frame = with_val_folder(index, 20)
    val, train = frame.loc[frame["split"] == "val", "path"], frame.loc[frame["split"] == "train", "path"]
    pairs = [(train.iloc[0], val.iloc[0]), (val.iloc[1], val.iloc[2])]
    table, _ = split(frame, 1, near_copies=frozenset(), copy_pairs=pairs, leakage="drop")
    subset = table.set_index("path")["subset"]
    assert subset[val.iloc[0]] == "dropped" and subset[train.iloc[0]] == "train"
    assert (subset[list(val.iloc[1:3])] == "val").all()
    assert table.set_index("path").loc[val.iloc[1], "unit"] == table.set_index("path").loc[val.iloc[2], "unit"]


def test_the_hold_out_keeps_a_chain_of_near_copies_together(index):
    """Three training images linked by two pairs (a ≈ b, b ≈ c) are one unit: on one side
    for every seed, held out for some."""
    covid = list(index.loc[(index["split"] == "train") & (index["label"] == "Covid"), "path"])[:3]
    sides = set()
    for seed in range(1, 13):
        table, _ = split(index, seed, copy_pairs=[(covid[0], covid[1]), (covid[2], covid[1])])
        subset = table.set_index("path").loc[covid, "subset"]
        assert subset.nunique() == 1, seed
        sides.add(subset.iloc[0])
    assert sides == {"train", "val"}


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


# ---- Patients (groups) ------------------------------------------------------------------------

def test_kermany_file_names_give_the_patient_of_pneumonia_and_of_both_normal_namings():
    paths = ["train/PNEUMONIA/person83_bacteria_407.jpeg", "test/PNEUMONIA/person83_virus_154.jpeg",
             "train/PNEUMONIA/person1_virus_6.jpeg", "train/NORMAL/IM-0115-0001.jpeg",
             "train/NORMAL/IM-0437-0001-0002.jpeg", "train/NORMAL/IM-0437-0001.jpeg",
             "val/NORMAL/NORMAL2-IM-0381-0001.jpeg", "test/NORMAL/NORMAL2-IM-0437-0001.jpeg"]
    assert image_groups("k", paths, KERMANY_GROUPS) == [
        "person83", "person83", "person1", "IM-0115", "IM-0437", "IM-0437", "NORMAL2-IM-0381", "NORMAL2-IM-0437"]
    assert image_groups("k", paths[:2], {"pattern": r"person\d+"}) == ["person83", "person83"]  # whole match
    assert image_groups("k", paths[:2], {}) == ["", ""]  # no groups: each image its own patient


def test_an_image_without_a_group_is_named_with_the_setting(tmp_path):
    paths = ["train/NORMAL/IM-0115-0001.jpeg", "train/NORMAL/scan_0001.jpeg"]
    with pytest.raises(DataError) as error:
        image_groups("k", paths, KERMANY_GROUPS)
    assert str(error.value) == (f"datasets.k.groups: 1 image(s) get no group from pattern "
                                f"{KERMANY_GROUPS['pattern']!r}:\n  - train/NORMAL/scan_0001.jpeg")
    table = tmp_path / "groups.csv"
    table.write_text("path,group\ntrain/NORMAL/scan_0001.jpeg,P7\ntrain/NORMAL/IM-0115-0001.jpeg,P7\n")
    assert image_groups("k", paths, {**KERMANY_GROUPS, "table": str(table)}) == ["P7", "P7"]  # the table wins
    assert image_groups("k", paths, {"table": str(table)}) == ["P7", "P7"]


@pytest.mark.parametrize("rows, expected", [
    ("file,patient\na,1\n", "has no column ['group', 'path']; it needs the columns path and group"),
    ("path,group\ntrain/A/1.png,p\ntrain/A/1.png,q\ntrain/A/9.png,p\ntrain/A/2.png, \n",
     "has 3 bad row(s):\n  - train/A/1.png: listed more than once\n  - train/A/9.png: not an image of the dataset"
     "\n  - train/A/2.png: empty group"),
])
def test_a_bad_group_table_is_named_with_its_rows(tmp_path, rows, expected):
    (tmp_path / "groups.csv").write_text(rows)
    with pytest.raises(DataError) as error:
        image_groups("k", ["train/A/1.png", "train/A/2.png"], {"table": str(tmp_path / "groups.csv")})
    assert str(error.value) == f"datasets.k.groups.table: {tmp_path / 'groups.csv'} {expected}"


@pytest.fixture(scope="module")
def patients(tmp_path_factory):
    """The index of a Kermany-style folder of real images with repeated patients, with
    the example configs' patient of every image."""
    root = kermany_patients(tmp_path_factory.mktemp("kermany") / "data")
    index = pd.DataFrame([vars(r) for r in verify_dataset(root, f"{root}.sha256")])
    index["group"] = image_groups("kermany", list(index["path"]), KERMANY_GROUPS)
    return index


def test_the_grouped_hold_out_never_splits_a_patient_and_stays_stratified(patients):
    pool = patients[patients["split"] == "train"]
    images_per_patient = pool["group"].value_counts()
    assert (images_per_patient > 1).sum() == 9 and images_per_patient.max() == 4  # 8 PNEUMONIA + IM-0437
    patient_of = dict(zip(patients["path"], patients["group"], strict=True))
    held_out = []
    for seed in range(1, 6):
        table, note = make_split(patients, seed, {**SETTINGS, "val_fraction": 0.3}, frozenset(), [])
        trainval = table[table["split"] == "train"]
        sides = trainval.groupby(trainval["path"].map(patient_of))["subset"].nunique()
        assert (sides == 1).all(), f"seed {seed} splits the patients {list(sides.index[sides > 1])}"
        val = trainval[trainval["subset"] == "val"]
        share = val.groupby("label").size() / trainval.groupby("label").size()
        assert share.between(0.2, 0.4).all(), share  # 3/10 of the patients, stratified by class
        assert note.startswith("no val/ folder") and set(table["group"]) == set(patients["group"])
        held_out.append(frozenset(val["path"]))
    assert len(set(held_out)) == 5  # each seed holds out other patients


def test_groups_of_the_test_images_come_from_the_split_in_the_order_asked(patients):
    table, _ = make_split(patients, 1, SETTINGS, frozenset(), [])
    tests = list(table.loc[table["subset"] == "test", "path"])[::-1]
    groups = groups_of_test_images(table, tests)
    assert list(groups) == [patients.set_index("path").loc[path, "group"] for path in tests]
    assert list(groups).count(SHARED_PATIENT) == 1
    assert groups_of_test_images(make_split(patients.drop(columns="group"), 1, SETTINGS, frozenset(), [])[0],
                                 tests) is None


def test_without_groups_the_hold_out_is_the_stratified_image_level_one(index):
    """No declared groups (an empty group per image) leave the split as it is without the column."""
    for seed in (1, 2):
        ungrouped, _ = split(index, seed)
        empty, _ = split(index.assign(group=""), seed)
        assert empty.equals(ungrouped)
