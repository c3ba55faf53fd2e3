"""The shortcut score by hand on a map that is not square and a box that is neither
centred nor square, so that a swapped axis or box edge changes the answer."""

from __future__ import annotations

import numpy as np
import pytest

from scripts import shortcut

BOX = [0.3, 0.1, 0.7, 0.6]  # left, top, right, bottom: area 0.4 x 0.5 = 0.2
# A 4 x 5 map: rows of height 0.25 overlap [0.1, 0.6] by (0.15, 0.25, 0.1, 0) -> shares (0.6, 1, 0.4, 0);
# columns of width 0.2 overlap [0.3, 0.7] by (0, 0.1, 0.2, 0.1, 0) -> shares (0, 0.5, 1, 0.5, 0).
WEIGHTS = np.outer([0.6, 1, 0.4, 0], [0, 0.5, 1, 0.5, 0])


def one_cell(row: int, column: int) -> np.ndarray:
    cam = np.zeros((4, 5))
    cam[row, column] = 1.0
    return cam


def test_box_weights_are_each_cells_overlap_with_the_box():
    np.testing.assert_allclose(shortcut.box_weights(4, 5, BOX), WEIGHTS)
    assert shortcut.box_weights(4, 5, BOX).mean() == pytest.approx(0.2)  # the box's area


def test_score_of_corner_uniform_inside_and_partial_maps_by_hand():
    cams = np.stack([
        one_cell(3, 0),  # bottom-left corner: all outside
        np.ones((4, 5)),  # uniform: the area outside the box
        one_cell(1, 2),  # wholly inside the box
        one_cell(0, 1),  # 0.6 x 0.5 of the cell inside (0 if left and top were swapped)
        5 * one_cell(1, 2) + 5 * one_cell(3, 4),  # half the mass inside, half outside; scale does not matter
        np.zeros((4, 5)),  # Grad-CAM found nothing
    ])
    scores = shortcut.outside_share(cams, BOX)
    np.testing.assert_allclose(scores[:5], [1.0, 0.8, 0.0, 0.7, 0.5], atol=1e-12)
    assert np.isnan(scores[5])
    assert shortcut.uniform_score(BOX) == pytest.approx(0.8)


def test_score_does_not_depend_on_the_maps_resolution():
    """Each cell's mass is spread over its rectangle: a map upsampled by repeating cells
    (its cells' edges now on other sides of the box's) has the same score."""
    cams = np.random.default_rng(3).uniform(0, 1, (6, 4, 5))
    finer = np.kron(cams, np.ones((1, 3, 7)))
    np.testing.assert_allclose(shortcut.outside_share(finer, BOX), shortcut.outside_share(cams, BOX))


@pytest.mark.parametrize("height, width, box, expected", [
    (2, 2, [0.1, 0.1, 0.9, 0.9], False),  # every cell overlaps a centred box equally
    (1, 1, BOX, False),
    (2, 2, BOX, True),  # an off-centre box: the cells differ
    (4, 4, [0.1, 0.1, 0.9, 0.9], True),
])
def test_a_map_is_informative_when_its_cells_overlap_the_box_differently(height, width, box, expected):
    assert shortcut.informative(height, width, box) is expected
