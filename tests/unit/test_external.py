"""External validation: collapsing probabilities by a class map, and finding the same
radiograph re-encoded and resized among real demo X-rays."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import DEMO

from scripts.data import external

TRAIN_NORMAL = sorted((DEMO / "train" / "Normal").iterdir())[:4]


def test_collapse_sums_each_external_classs_trained_classes_in_sorted_column_order():
    """Four trained classes onto "B" (first in the map) and "A": the columns are sorted
    (A, B), not in the map's order, and each row keeps its total."""
    trained = ["w", "x", "y", "z"]
    class_map = {"x": "B", "w": "A", "y": "B", "z": "A"}
    probabilities = np.array([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1], [0.0, 0.5, 0.5, 0.0]])
    assert external.external_classes(class_map) == ["A", "B"]
    collapsed = external.collapse(probabilities, trained, class_map)
    np.testing.assert_allclose(collapsed, [[0.5, 0.5], [0.8, 0.2], [0.0, 1.0]])
    renamed = external.collapse(probabilities, trained, {c: c.upper() for c in trained})  # one to one
    np.testing.assert_allclose(renamed, probabilities)


def rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def jpeg_copy(image: np.ndarray, size: int, quality: int) -> np.ndarray:
    """``image`` resized to ``size`` px and re-encoded as JPEG at ``quality``, decoded again."""
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)  # grey X-ray: channel order does not matter


def test_fingerprints_are_grey_thumbnails_and_their_correlation_ignores_brightness_and_contrast():
    image = rgb(TRAIN_NORMAL[0])
    duller = np.clip(image.astype(float) * 0.6 + 50, 0, 255).round().astype(np.uint8)
    flat = np.full((40, 40, 3), 128, np.uint8)
    prints = external.fingerprints([image, duller, flat])
    assert prints.shape == (3, external.FINGERPRINT_SIZE, external.FINGERPRINT_SIZE) and prints.dtype == np.float32
    assert external.aligned_correlation(prints[1], prints[0]) > 0.98
    assert external.aligned_correlation(prints[2], prints[0]) == 0  # no detail at all: nothing to correlate


@pytest.fixture(scope="module")
def trained():
    return external.fingerprints([rgb(path) for path in TRAIN_NORMAL])


def test_a_reencoded_resized_copy_is_a_near_duplicate_and_a_different_radiograph_is_not(trained):
    """The external set: train/Normal's third image resized from 256 to 200 px and saved
    as JPEG quality 60, and a test image of the same class (another child)."""
    copy = jpeg_copy(rgb(TRAIN_NORMAL[2]), 200, 60)
    other = rgb(DEMO / "test" / "Normal" / "0101.jpeg")
    where, correlation = external.near_duplicates(external.fingerprints([copy, other]), trained)
    assert where[0] == 2
    assert correlation[0] >= external.NEAR_DUPLICATE_CORRELATION > correlation[1]


def test_the_best_match_does_not_depend_on_the_chunk_size(trained):
    """External = trained images 3 and 0 themselves: correlation 1 at those indices,
    whether the best match lies in the first chunk or a later one."""
    for chunk in (1, 3, 1024):
        where, correlation = external.near_duplicates(trained[[3, 0]], trained, chunk=chunk)
        np.testing.assert_array_equal(where, [3, 0])
        np.testing.assert_allclose(correlation, [1.0, 1.0], atol=1e-9)


def test_nothing_to_compare_with():
    where, correlation = external.near_duplicates(np.ones((2, 16)), np.empty((0, 16)))
    np.testing.assert_array_equal(where, [-1, -1])
    assert np.isnan(correlation).all()


@pytest.mark.parametrize("size, quality", [(256, 95), (180, 60)])
def test_every_demo_normal_is_closest_to_its_own_copy(trained, size, quality):
    """Among four real radiographs of one class, each copy's best match is its source."""
    copies = external.fingerprints([jpeg_copy(rgb(path), size, quality) for path in TRAIN_NORMAL])
    where, correlation = external.near_duplicates(copies, trained)
    np.testing.assert_array_equal(where, [0, 1, 2, 3])
    assert (correlation >= external.NEAR_DUPLICATE_CORRELATION).all()
