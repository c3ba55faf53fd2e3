"""External validation: a dataset's models evaluated on another dataset's test split.

The trained classes are mapped onto the external dataset's classes by the config's
``class_map`` (e.g. ``{Covid: PNEUMONIA, "Viral Pneumonia": PNEUMONIA, Normal: NORMAL}``)
and the predicted probabilities are collapsed by summing over the trained classes that map
to the same external class; the prediction is the argmax of the collapsed probabilities.
The internal metrics set beside the external ones are computed on the same mapped task:
the internal test labels mapped by :func:`collapse_labels`, the probabilities by :func:`collapse`.

An external test image that is the same radiograph as an image of the trained dataset
(public chest X-ray collections copy each other's images, re-encoded and resized, so byte
hashes do not find them) is not external data: :func:`near_duplicates` finds them by the
correlation of high-pass filtered 64 px grey images.

TensorFlow-free: the workflow imports it while it checks the config.
"""

from __future__ import annotations

import numpy as np

FINGERPRINT_SIZE = 64  # px, square grey image the near-duplicate check compares
HIGH_PASS_SIGMA = 2.0  # px at FINGERPRINT_SIZE: what remains is texture and edges, not overall shading
# Two decodings of one radiograph correlate at >= 0.85 (demo vs Kermany subset: 41 pairs,
# 0.85-0.99); different radiographs of the same kind at <= 0.6 (Kermany train vs test, 120 x
# 300 pairs, largest 0.60). The threshold sits in that gap.
NEAR_DUPLICATE_CORRELATION = 0.8
DIFFERENT_RADIOGRAPHS_BELOW = 0.6  # the largest correlation measured between different radiographs (above)


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
    """``(n, FINGERPRINT_SIZE**2)``: each RGB ``uint8`` image (any size) as grey, high-pass filtered (minus its
    Gaussian blur) and standardised, so that a dot product / size is a correlation."""
    import cv2

    rows = []
    for image in images:
        grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        grey = cv2.resize(grey, (FINGERPRINT_SIZE, FINGERPRINT_SIZE), interpolation=cv2.INTER_AREA)
        grey = grey.astype(np.float64)
        detail = grey - cv2.GaussianBlur(grey, (0, 0), HIGH_PASS_SIGMA)
        rows.append((detail - detail.mean()) / (detail.std() + 1e-9))
    return np.reshape(rows, (len(rows), FINGERPRINT_SIZE * FINGERPRINT_SIZE))


def near_duplicates(external: np.ndarray, trained: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For each external fingerprint the index of the most correlated trained fingerprint and
    that correlation (chunked, so a large trained dataset needs little memory)."""
    if len(trained) == 0:
        return np.full(len(external), -1), np.full(len(external), np.nan)
    best, where = np.full(len(external), -np.inf), np.zeros(len(external), dtype=int)
    for start in range(0, len(trained), chunk):
        block = external @ trained[start:start + chunk].T / external.shape[1]
        better = block.max(axis=1) > best
        where[better] = start + block.argmax(axis=1)[better]
        best = np.maximum(best, block.max(axis=1))
    return where, best
