"""Is the model looking at the lungs? The share of Grad-CAM mass outside a central box.

DeGrave et al. (2021, Nat. Mach. Intell.) found COVID-19 classifiers that relied on text
markers, image borders and corners rather than the lung fields. Those cues sit in the
frame of the image. The score here is the share of a heatmap's mass that falls outside a
fixed central box (``evaluation.lung_box``, fractions of width and height), averaged over
the test images: a model that looks at a corner marker scores near 1, a uniform heatmap
scores 1 - box area, a model looking at the chest centre near 0.

A mean hides a shortcut that only some images carry: with a marker on 30% of one class's
images, maps on the lungs elsewhere pull the mean below a uniform map's. So each map is
also compared with a uniform map on its own: the share of a run's test maps that put more
mass outside the box than a uniform map does (:func:`above_uniform`) is what the verdict
flags (``evaluation.shortcut_image_share``). A model that looks at the lungs has few such
maps; one that learned a corner marker has one on every marked image (a scratch CNN on a
marker in every image of one class: all its maps, 0.38-0.50 outside against 0.36).

A heatmap cell covers a rectangle of the image; its mass is split between inside and
outside in proportion to the rectangle's overlap with the box, so the score does not
depend on where a cell's centre falls. A 2 x 2 map cannot locate anything (every cell
overlaps a centred box equally): its score is always 1 - box area (:func:`informative`).
Runs explain a layer of at least ``gradcam.min_cells`` cells per side
(``scripts.train.models.explained_layer``), so such maps come only from a ``min_cells`` below 3.
"""

from __future__ import annotations

import numpy as np


def _inside_share(cells: int, low: float, high: float) -> np.ndarray:
    """Per cell of a row of ``cells`` equal cells over [0, 1], the part of it inside [low, high]."""
    edges = np.linspace(0.0, 1.0, cells + 1)
    overlap = np.clip(np.minimum(edges[1:], high) - np.maximum(edges[:-1], low), 0, None)
    return overlap * cells


def box_weights(height: int, width: int, box: list[float]) -> np.ndarray:
    """``(height, width)``: the share of each heatmap cell inside ``box`` = [left, top, right, bottom]."""
    left, top, right, bottom = box
    return np.outer(_inside_share(height, top, bottom), _inside_share(width, left, right))


def outside_share(cams: np.ndarray, box: list[float]) -> np.ndarray:
    """Per heatmap (``(n, H, W)``, non-negative) the share of its mass outside ``box``;
    NaN for an all-zero map (Grad-CAM found nothing that raised the score)."""
    cams = np.asarray(cams, dtype=np.float64)
    inside = (cams * box_weights(cams.shape[1], cams.shape[2], box)).sum(axis=(1, 2))
    total = cams.sum(axis=(1, 2))
    return np.divide(total - inside, total, out=np.full(len(cams), np.nan), where=total > 0)


def informative(height: int, width: int, box: list[float]) -> bool:
    """Whether the map's cells differ in how much of them lies inside the box."""
    weights = box_weights(height, width, box)
    return bool(weights.max() - weights.min() > 1e-9)


def uniform_score(box: list[float]) -> float:
    """The score of a uniform heatmap: the area outside the box."""
    left, top, right, bottom = box
    return 1.0 - (right - left) * (bottom - top)


def above_uniform(shares: np.ndarray, box: list[float]) -> float:
    """The share of maps (outside shares ``shares``, NaN for an all-zero map, left out) that
    put more of their mass outside ``box`` than a uniform map does; NaN when no map has any mass."""
    scored = np.asarray(shares, dtype=float)
    scored = scored[~np.isnan(scored)]
    # a uniform map's own share, computed in floating point, is not above itself
    return float((scored > uniform_score(box) + 1e-9).mean()) if len(scored) else np.nan
