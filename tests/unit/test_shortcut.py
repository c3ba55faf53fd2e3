"""The shortcut score by hand on a map that is not square and a box that is neither
centred nor square, so that a swapped axis or box edge changes the answer."""

from __future__ import annotations

import numpy as np
import pytest

from scripts.stats import shortcut

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


def marker_maps(n_per_class: int, marker_share: float) -> np.ndarray:
    """8 x 8 Grad-CAM maps of a balanced test set: a lung-centred map on every image but
    ``marker_share`` of class 1's, where the map sits on a corner marker (most of its
    mass in the corner cell, a little on the lungs)."""
    lungs = np.full((8, 8), 0.1)
    lungs[3:5, 3:5] = 1.0
    marker = np.zeros((8, 8))
    marker[0, 0], marker[3:5, 3:5] = 1.0, 0.1
    n_marked = round(marker_share * n_per_class)
    return np.stack([lungs] * (2 * n_per_class - n_marked) + [marker] * n_marked)


def test_a_marker_on_30_percent_of_one_class_is_flagged(tmp_path):
    """15 of 100 maps on a corner marker: the mean share outside the box (0.30) stays below
    what a uniform map scores (0.36), yet the configuration is flagged because 15% of its
    maps put more mass outside the box than a uniform map (default flag above 10%)."""
    from conftest import validated

    from scripts.stats.run_tables import read_shortcut_score
    from scripts.stats.verdict import shortcut_verdict

    evaluation = validated({"datasets": {"d": {"path": ".", "manifest": "m"}}, "models": ["scratch_cnn"],
                            "strategies": ["scratch"], "seeds": [1]})["evaluation"]
    box = evaluation["lung_box"]
    cams = np.concatenate([marker_maps(50, 0.3), np.zeros((2, 8, 8))])  # two maps with no mass
    np.savez_compressed(tmp_path / "gradcam.npz", cams=cams.astype(np.float16), paths=np.arange(len(cams)).astype(str))
    score = read_shortcut_score(tmp_path / "gradcam.npz", box)
    assert score["shortcut_score"] < shortcut.uniform_score(box) == pytest.approx(0.36)
    assert score["shortcut_above_uniform"] == pytest.approx(15 / 100)  # the empty maps are not scored
    assert score["shortcut_no_map"] == pytest.approx(2 / 102)
    config = {"dataset": "d", "model": "scratch_cnn", "strategy": "scratch", "weights": "none", "fraction": 1.0}
    verdict = shortcut_verdict([{**config, **score}], evaluation, config)
    assert verdict["chosen_flagged"] and verdict["flagged"][0]["above_uniform"] == pytest.approx(0.15)
    clean = shortcut.outside_share(marker_maps(50, 0.0), box)
    assert shortcut.above_uniform(clean, box) == 0.0


def test_a_uniform_map_is_not_above_itself_and_no_map_is_no_score():
    for box in ([0.1, 0.1, 0.9, 0.9], [0.3, 0.3, 0.7, 0.7]):
        assert shortcut.above_uniform(shortcut.outside_share(np.ones((3, 7, 7)), box), box) == 0.0
    assert np.isnan(shortcut.above_uniform(np.array([np.nan, np.nan]), BOX))


def test_a_configuration_without_any_map_has_no_score_not_a_pass():
    from scripts.report.view import shortcut_flag

    scored = {"shortcut_above_uniform": 0.02, "cam_informative": True}
    assert shortcut_flag(scored, flagged=False) == "below"
    assert shortcut_flag({**scored, "shortcut_above_uniform": np.nan}, flagged=False) == "no score"
    assert shortcut_flag({**scored, "cam_informative": False}, flagged=False) == "uninformative"
    assert shortcut_flag(scored, flagged=True) == "flagged"
