"""The near-copy check on the bundled real radiographs: copies made by twelve transforms
(crops, padding, a shift, rotations, mirroring, inversion) are found, and different
radiographs are not flagged: none of the Kermany subset's (it holds no copies), and of the
demo's only those its reviewed list (resources/demo/near-copies.csv) names."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import DEMO, KERMANY

from scripts.data import external
from scripts.data.images import load_image

# The demo's images that show one radiograph (same ``radiograph``), reviewed by eye, and the
# different radiographs of one ``patient`` that the check may link.
REVIEWED = DEMO.parent / "near-copies.csv"
CAUGHT_AT_LEAST = 19  # of 20 copies per transform


def crop(share: float, sides: str = "tblr"):
    def transform(image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        dy, dx = round(share * h), round(share * w)
        return image[dy if "t" in sides else 0:h - dy if "b" in sides else h,
                     dx if "l" in sides else 0:w - dx if "r" in sides else w]
    return transform


def rotate(degrees: float):
    def transform(image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        return cv2.warpAffine(image, cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0), (w, h))
    return transform


def pad(image: np.ndarray, share: float = 0.05) -> np.ndarray:
    dy, dx = round(share * image.shape[0]), round(share * image.shape[1])
    return cv2.copyMakeBorder(image, dy, dy, dx, dx, cv2.BORDER_CONSTANT, value=0)


def shift(image: np.ndarray, share: float = 0.03) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.warpAffine(image, np.float32([[1, 0, share * w], [0, 1, share * h]]), (w, h))


TRANSFORMS = {
    "crop 2.5% per side": crop(0.025), "crop 5% per side": crop(0.05), "crop 10% per side": crop(0.1),
    "crop 10% from the top": crop(0.1, "t"), "5% border pad": pad, "3% shift": shift,
    "rotate 1°": rotate(1), "rotate 3°": rotate(3), "rotate 5°": rotate(5), "rotate 10°": rotate(10),
    "horizontal flip": lambda image: np.ascontiguousarray(image[:, ::-1]),
    "inverted": lambda image: 255 - image,
}


def prints_of(root: Path, paths: list[str]) -> np.ndarray:
    """The fingerprints the leakage step computes."""
    return external.fingerprints([load_image(root / path, external.FINGERPRINT_SIZE)[0] for path in paths])


def relative(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.glob("*/*/*"))


@pytest.fixture(scope="module")
def pool():
    """Every demo and Kermany image as (root, path), and their fingerprints."""
    images = [(DEMO, path) for path in relative(DEMO)] + [(KERMANY, path) for path in relative(KERMANY)]
    prints = np.concatenate([prints_of(DEMO, relative(DEMO)), prints_of(KERMANY, relative(KERMANY))])
    return images, prints


def originals(images: list[tuple[Path, str]]) -> list[int]:
    """10 Kermany and 10 demo images (of the pool's) that have no copy in the pool."""
    reviewed = set(pd.read_csv(REVIEWED)["path"])
    demo = [i for i, (root, path) in enumerate(images) if root == DEMO and path not in reviewed]
    kermany = [i for i, (root, _) in enumerate(images) if root == KERMANY]
    return demo[::len(demo) // 10][:10] + kermany[::len(kermany) // 10][:10]


@pytest.mark.parametrize("name", TRANSFORMS)
def test_copies_made_by_each_transform_are_found_among_every_bundled_image(pool, name):
    """Each of 20 radiographs transformed at full size, then compared with all 738
    bundled images: its own source is its most similar image at r >= the threshold."""
    images, prints = pool
    sources = originals(images)
    copies = []
    for i in sources:
        root, path = images[i]
        full = cv2.cvtColor(cv2.imread(str(root / path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        copies.append(TRANSFORMS[name](full))
    where, correlation = external.near_duplicates(external.fingerprints(copies), prints)
    caught = (where == sources) & (correlation >= external.NEAR_DUPLICATE_CORRELATION)
    assert caught.sum() >= CAUGHT_AT_LEAST, (name, np.round(correlation, 3).tolist())


def test_no_pair_of_the_kermany_subsets_different_radiographs_is_flagged():
    """The subset holds no copies (420 distinct radiographs, 87,990 pairs): the check flags
    none, and no test image comes near the threshold against the training images."""
    paths = relative(KERMANY)
    prints = prints_of(KERMANY, paths)
    assert external.copy_pairs(prints) == []
    test = np.array([path.startswith("test/") for path in paths])
    _, correlation = external.near_duplicates(prints[test], prints[~test])
    assert correlation.max() < external.DIFFERENT_RADIOGRAPHS_BELOW


def test_the_demos_flagged_pairs_are_its_reviewed_copies():
    """Every pair of images of one reviewed radiograph is flagged (byte-identical,
    re-encoded, re-windowed, cropped), and every flagged pair is one radiograph or, where
    the review says so, two radiographs of one patient."""
    paths = relative(DEMO)
    found = {(paths[i], paths[j]) for i, j, _ in external.copy_pairs(prints_of(DEMO, paths))}
    reviewed = pd.read_csv(REVIEWED, keep_default_na=False)
    same = {tuple(sorted(pair)) for _, rows in reviewed.groupby("radiograph")
            for pair in itertools.combinations(rows["path"], 2)}
    assert same <= found, sorted(same - found)
    patients = _radiographs_with_patients(reviewed)
    others = found - same
    assert all(any({a, b} <= images for images in patients) for a, b in others), sorted(others)


def _radiographs_with_patients(reviewed: pd.DataFrame) -> list[set[str]]:
    """Per reviewed patient every image of its radiographs (the copies included)."""
    named = reviewed[reviewed["patient"] != ""]
    return [set(reviewed.loc[reviewed["radiograph"].isin(rows["radiograph"]), "path"])
            for _, rows in named.groupby("patient")]
