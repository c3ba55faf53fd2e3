"""External validation: a dataset's models evaluated on another dataset's test split.

The trained classes are mapped onto the external dataset's classes by the config's
``class_map`` (e.g. ``{Covid: PNEUMONIA, "Viral Pneumonia": PNEUMONIA, Normal: NORMAL}``)
and the predicted probabilities are collapsed by summing over the trained classes that map
to the same external class; the prediction is the argmax of the collapsed probabilities.
The internal metrics set beside the external ones are computed on the same mapped task:
the internal test labels mapped by :func:`collapse_labels`, the probabilities by :func:`collapse`.

An external test image that is the same radiograph as an image of the trained dataset
(public chest X-ray collections copy each other's images, re-encoded, resized, cropped,
padded, shifted, rotated, mirrored or stored inverted, so byte hashes do not find them) is
not external data: :func:`near_duplicates` finds them, and :func:`copy_pairs` finds such
copies within one set of images (the training pool, the test set).

The check has two passes. A cheap shortlist compares each query image, under
:data:`TRANSFORMS` (and their mirror images), with every reference image: band-passed
grey images sampled over their central region, ``|r|`` so that an inverted copy counts.
The :data:`SHORTLIST` best references per query are then aligned to it (OpenCV's
``findTransformECC``, affine, started from the best transform) and compared by the
correlation of their high-pass filtered 64 px images over the area both cover; a pair at
``r >= NEAR_DUPLICATE_CORRELATION`` is the same radiograph. Both passes work on blocks of
images, so the cost grows with queries × references and the memory with the block size.

TensorFlow-free: the workflow imports it while it checks the config.
"""

from __future__ import annotations

import numpy as np

FINGERPRINT_SIZE = 64  # px, square grey image the check aligns and compares
HIGH_PASS_SIGMA = 2.0  # px at FINGERPRINT_SIZE: what remains is texture and edges, not overall shading
# The shortlist's band: detail between these blur widths (px at FINGERPRINT_SIZE), sampled on
# a SHORTLIST_GRID² grid over the central SHORTLIST_REGION of the image (a crop or a
# rotation keeps that region inside the image).
SHORTLIST_BAND = (1.0, 4.0)
SHORTLIST_GRID = 24
SHORTLIST_REGION = 0.7
SHORTLIST = 5  # references per query aligned and compared
# Where a point of the original (x, y in image widths from the centre) lies in a copy made by
# each transform: 2 × 3 affine maps, each also tried mirrored. Alignment refines the best.
CROPS = (0.025, 0.05, 0.1)  # per side
PAD = 0.05  # per side
ROTATIONS = (3.0, 6.0, 10.0)  # degrees, each way
SHIFT = 0.03  # of the width or height, each way
TOP_CROP = 0.1  # from the top or the bottom only
TRANSFORMS = np.array(
    [[[1, 0, 0], [0, 1, 0]]]
    + [[[s, 0, 0], [0, s, 0]] for c in CROPS for s in (1 / (1 - 2 * c), 1 - 2 * c)]
    + [[[1 / (1 + 2 * PAD), 0, 0], [0, 1 / (1 + 2 * PAD), 0]], [[1 + 2 * PAD, 0, 0], [0, 1 + 2 * PAD, 0]]]
    + [[[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0]]
       for a in np.deg2rad([sign * d for d in ROTATIONS for sign in (-1, 1)])]
    + [[[1, 0, 0], [0, 1 / (1 - TOP_CROP), sign * TOP_CROP / (2 * (1 - TOP_CROP))]] for sign in (-1, 1)]
    + [[[1, 0, dx], [0, 1, dy]] for dx in (-SHIFT, 0, SHIFT) for dy in (-SHIFT, 0, SHIFT) if dx or dy]
)
ALIGNMENT = "crops up to 10% per side or from one edge, padding, shifts, rotations up to 10°, mirroring, inversion"
# Two images of one radiograph correlate at >= 0.86 after alignment (re-encoded, resized and
# the transforms above: tests/unit/test_copies.py); different radiographs at <= 0.74 (the
# Kermany subset's distinct pairs and the demo's, aligned the same way), but for two
# radiographs of one demo patient at 0.83 (resources/demo/near-copies.csv). The threshold
# sits in that gap.
NEAR_DUPLICATE_CORRELATION = 0.8
DIFFERENT_RADIOGRAPHS_BELOW = 0.75  # the largest correlation measured between different radiographs (above)


def class_map_problems(key: str, class_map: dict, trained: list[str], external: list[str]) -> list[str]:
    """What is wrong with ``class_map`` (``key`` names it in each message): every trained
    class must be mapped, every target must be an external class, and every external
    class must be some class's target (its images could never be predicted right)."""
    problems = []
    unmapped = [c for c in trained if c not in class_map]
    if unmapped:
        problems.append(f"{key}: the trained classes {unmapped} are not mapped (map every class of {trained})")
    unknown = [c for c in class_map if c not in trained]
    if unknown:
        problems.append(f"{key}: {unknown} are not classes of the trained dataset ({trained})")
    wrong = sorted({t for t in class_map.values() if t not in external})
    if wrong:
        problems.append(f"{key}: the targets {wrong} are not classes of the external dataset ({external})")
    untargeted = [c for c in external if c not in class_map.values()]
    if untargeted:
        problems.append(f"{key}: no trained class maps to the external classes {untargeted}; "
                        "their images could never be predicted right")
    return problems


def external_classes(class_map: dict) -> list[str]:
    """The external dataset's classes as the collapsed probabilities' columns (sorted)."""
    return sorted(set(class_map.values()))


def collapse(probabilities: np.ndarray, trained: list[str], class_map: dict) -> np.ndarray:
    """``(n, len(external_classes))``: per external class the summed probability of the
    trained classes mapped to it."""
    targets = external_classes(class_map)
    mapping = np.zeros((len(trained), len(targets)))
    for i, name in enumerate(trained):
        mapping[i, targets.index(class_map[name])] = 1.0
    return np.asarray(probabilities, dtype=float) @ mapping


def collapse_labels(labels: np.ndarray, trained: list[str], class_map: dict) -> np.ndarray:
    """Trained-class label indices as indices of :func:`external_classes` (the mapped task)."""
    targets = external_classes(class_map)
    mapped = np.array([targets.index(class_map[name]) for name in trained], dtype=int)
    return mapped[np.asarray(labels, dtype=int)]


def fingerprints(images) -> np.ndarray:
    """``(n, FINGERPRINT_SIZE, FINGERPRINT_SIZE)`` float32: each RGB ``uint8`` image (any
    size) as grey, resized; what :func:`near_duplicates` and :func:`copy_pairs` compare."""
    import cv2

    size = (FINGERPRINT_SIZE, FINGERPRINT_SIZE)
    return np.array([cv2.resize(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY), size,
                                interpolation=cv2.INTER_AREA) for image in images],
                    dtype=np.float32).reshape(-1, *size)


def _shortlist_prints(thumbnails: np.ndarray, transforms: np.ndarray) -> np.ndarray:
    """``(n, 2 · len(transforms), SHORTLIST_GRID²)``: per image and transform (then the same
    mirrored) the band-passed image sampled where the transform puts the reference's
    central region, standardised so that a dot product is a correlation."""
    import cv2

    grid, size = SHORTLIST_GRID, FINGERPRINT_SIZE
    corner = np.full(2, -SHORTLIST_REGION / 2 + SHORTLIST_REGION / (2 * grid))
    prints = np.empty((len(thumbnails), 2 * len(transforms), grid * grid), dtype=np.float32)
    for i, thumbnail in enumerate(thumbnails):
        band = cv2.GaussianBlur(thumbnail, (0, 0), SHORTLIST_BAND[0]) - cv2.GaussianBlur(thumbnail, (0, 0),
                                                                                            SHORTLIST_BAND[1])
        for k, transform in enumerate(transforms):
            linear = transform[:, :2]
            # grid cell (column, row) -> point of the copy in pixels
            warp = np.hstack([linear * SHORTLIST_REGION / grid * size,
                              ((linear @ corner + transform[:, 2] + 0.5) * size - 0.5)[:, None]])
            for mirror in (0, 1):
                source = np.ascontiguousarray(band[:, ::-1]) if mirror else band
                sampled = cv2.warpAffine(source, warp, (grid, grid), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                         borderMode=cv2.BORDER_REPLICATE).ravel()
                sampled = sampled - sampled.mean()
                prints[i, 2 * k + mirror] = sampled / (np.linalg.norm(sampled) + 1e-6)
    return prints


def _shortlist(queries: np.ndarray, references: np.ndarray, block: int, exclude_self: bool) -> tuple:
    """Per query thumbnail the :data:`SHORTLIST` references with the largest ``|r|`` under
    any transform: their indices, and per pair the transform (index into the mirrored list)
    and the sign of ``r`` (negative: an inverted copy). ``exclude_self``: queries and
    references are one set; an image is not its own candidate."""
    k = min(SHORTLIST, len(references) - int(exclude_self))
    reference_prints = _shortlist_prints(references, TRANSFORMS[:1])[:, 0]
    where = np.zeros((len(queries), k), dtype=int)
    transform, sign = np.zeros((len(queries), k), dtype=int), np.ones((len(queries), k))
    for start in range(0, len(queries), block):
        prints = _shortlist_prints(queries[start:start + block], TRANSFORMS)
        best = np.empty((len(prints), len(references)), dtype=np.float32)
        for ref_start in range(0, len(references), block):
            scores = np.abs(prints @ reference_prints[ref_start:ref_start + block].T)  # query, transform, reference
            best[:, ref_start:ref_start + block] = scores.max(axis=1)
        if exclude_self:
            best[np.arange(len(prints)), np.arange(start, start + len(prints))] = -np.inf
        top = np.argsort(-best, axis=1, kind="stable")[:, :k]
        where[start:start + len(prints)] = top
        chosen = np.einsum("qtd,qkd->qkt", prints, reference_prints[top])
        transform[start:start + len(prints)] = np.abs(chosen).argmax(axis=2)
        sign[start:start + len(prints)] = np.sign(np.take_along_axis(chosen, transform[start:start + len(prints),
                                                                                     :, None], 2)[..., 0])
    return where, transform, sign


def _high_pass(image: np.ndarray) -> np.ndarray:
    import cv2

    return image - cv2.GaussianBlur(image, (0, 0), HIGH_PASS_SIGMA)


def aligned_correlation(query: np.ndarray, reference: np.ndarray, transform: int = 0, inverted: bool = False) -> float:
    """The correlation of the high-pass filtered thumbnails ``query`` and ``reference``
    after aligning the query to the reference (affine ECC, started from transform
    ``transform`` of the mirrored :data:`TRANSFORMS` list; ``inverted``: the query's grey
    levels reversed), over the area both cover (:func:`_correlation_under`); the larger of
    the correlations at the start and after ECC."""
    import cv2

    size = FINGERPRINT_SIZE
    query = np.ascontiguousarray(query[:, ::-1]) if transform % 2 else query
    query = 255 - query if inverted else query
    linear, offset = TRANSFORMS[transform // 2][:, :2], TRANSFORMS[transform // 2][:, 2]
    # reference pixel -> query pixel, the transform's normalised coordinates in pixels
    warp = np.hstack([linear, (size * (offset + 0.5) - 0.5 - linear @ np.full(2, size / 2 - 0.5))[:, None]])
    start = warp.astype(np.float32)
    try:
        _, aligned = cv2.findTransformECC(cv2.GaussianBlur(reference, (0, 0), 1.0),
                                          cv2.GaussianBlur(query, (0, 0), 1.0), start.copy(), cv2.MOTION_AFFINE,
                                          (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4), None, 1)
    except cv2.error:  # did not converge (e.g. a flat image): the starting transform only
        aligned = start
    # ECC maximises the correlation of the blurred images; where it drifts from a start that
    # was already right (a copy with a compressed grey range), the start's correlation stands.
    return max(_correlation_under(query, reference, start), _correlation_under(query, reference, aligned))


def _correlation_under(query: np.ndarray, reference: np.ndarray, warp: np.ndarray) -> float:
    """The high-pass correlation of ``reference`` and ``query`` sampled at ``warp``
    (reference pixel → query pixel) over the area both cover; 0 where that is less than
    a third of the image."""
    import cv2

    size = FINGERPRINT_SIZE
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    aligned = cv2.warpAffine(query, warp, (size, size), flags=flags)
    covered = cv2.warpAffine(np.ones_like(query), warp, (size, size), flags=flags)
    # leave out the margin whose high-pass detail mixes in the uncovered area
    both = cv2.erode((covered > 0.99).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    if both.sum() < size * size / 3:
        return 0.0
    a, b = _high_pass(aligned)[both], _high_pass(reference)[both]
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-6))


def _aligned(queries: np.ndarray, references: np.ndarray, block: int, exclude_self: bool) -> tuple:
    """Per query its shortlisted references (indices) and their aligned correlations."""
    where, transform, sign = _shortlist(queries, references, block, exclude_self)
    correlation = np.array([[aligned_correlation(queries[q], references[where[q, j]], transform[q, j], sign[q, j] < 0)
                             for j in range(where.shape[1])] for q in range(len(queries))]).reshape(where.shape)
    return where, correlation


def near_duplicates(external: np.ndarray, trained: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For each external thumbnail (:func:`fingerprints`) the index of the most similar
    trained one and their aligned correlation (:func:`aligned_correlation`; blocks of
    ``chunk`` images, so a large trained dataset needs little memory)."""
    if len(trained) == 0 or len(external) == 0:
        return np.full(len(external), -1), np.full(len(external), np.nan)
    where, correlation = _aligned(external, trained, chunk, exclude_self=False)
    best = correlation.argmax(axis=1)
    rows = np.arange(len(external))
    return where[rows, best], correlation[rows, best]


def copy_pairs(thumbnails: np.ndarray, chunk: int = 1024) -> list[tuple[int, int, float]]:
    """The pairs ``(i, j, r)``, ``i < j``, of one set of thumbnails that are the same
    radiograph (aligned correlation ``r >= NEAR_DUPLICATE_CORRELATION`` either way round)."""
    if len(thumbnails) < 2:
        return []
    where, correlation = _aligned(thumbnails, thumbnails, chunk, exclude_self=True)
    found: dict[tuple[int, int], float] = {}
    for i, j in zip(*np.nonzero(correlation >= NEAR_DUPLICATE_CORRELATION), strict=True):
        pair = (min(i, int(where[i, j])), max(i, int(where[i, j])))
        found[pair] = max(found.get(pair, -1.0), float(correlation[i, j]))
    return [(i, j, r) for (i, j), r in sorted(found.items())]
