"""Decode every image once, convert it consistently, and cache it as one array.

Decoding is done with OpenCV (not ``tf.io``) because it honours EXIF orientation,
converts CMYK, 16-bit and grayscale images and can decode huge JPEGs at reduced
resolution. The result is one ``uint8`` array per dataset × image size that every
training and evaluation job memory-maps instead of decoding again.

Each image is also checked for burned-in colour (annotations, arrows, overlays): real
chest X-ray collections carry them, unevenly across classes, and a model can learn them
instead of anatomy. The share of coloured pixels is measured on the decoded image before
resizing; ``data.colour_overlays`` decides whether such images are kept (``warn``),
converted to grey (``grey``) or refused (``fail``).
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from scripts.data.manifest import DataError

# Header reads only; pixels are decoded by OpenCV with its own size limit.
Image.MAX_IMAGE_PIXELS = None
EXIF_ORIENTATION = 0x0112
JPEG_SUFFIXES = {".jpg", ".jpeg"}
# Above this many pixels an image is reported: it is likely a scan or stitched
# composite, and its reduced-resolution decode is worth knowing about.
LARGE_IMAGE_PIXELS = 25_000_000
# Large JPEGs are decoded at reduced resolution, but never with a short side below this:
# the colour check then sees the same pixels whatever the model's image size, and thin
# drawn lines are averaged over at most a few source pixels.
DECODE_MIN_SIDE = 512
COLOUR_POLICIES = ("warn", "grey", "fail")
COLOUR_KEY = "data.colour_overlays"
GREY_CONVERSION = "colour overlay converted to grey"
# Shares are stored to 1e-6: finer than one pixel of a 1000 × 1000 image.
SHARE_DECIMALS = 6
SIGNIFICANCE = 0.05


def _describe(path: Path) -> tuple[tuple[int, int], list[str]]:
    """Image size and the conversions it will need, from its header alone."""
    try:
        with Image.open(path) as image:
            size, mode, fmt = image.size, image.mode, image.format
            orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception as error:  # PIL raises many types for garbage input
        raise DataError(f"{path}: not a readable image ({error}); remove or replace it") from None
    if fmt not in {"JPEG", "PNG", "BMP", "TIFF", "MPO"}:
        raise DataError(f"{path}: format {fmt} is not supported; convert it to PNG or JPEG")
    conversions = []
    if mode in {"L", "LA", "1", "P", "I;16", "I;16B", "I;16L", "I"}:
        conversions.append("grayscale or palette to RGB")
    if mode in {"RGBA", "LA", "PA"}:
        conversions.append("alpha channel dropped")
    if mode.startswith("I") or (fmt == "PNG" and _png_bit_depth(path) == 16):
        conversions.append("16-bit to 8-bit")
    if mode == "CMYK":
        conversions.append("CMYK to RGB")
    if orientation not in (0, 1):
        conversions.append("EXIF rotation applied")
    return size, conversions


def _png_bit_depth(path: Path) -> int:
    """Bit depth from the IHDR chunk (PIL reports 16-bit RGB PNGs as plain RGB)."""
    with open(path, "rb") as handle:
        header = handle.read(25)
    return header[24] if len(header) == 25 else 8


def _is_truncated(path: Path) -> bool:
    """JPEGs end with the EOI marker and PNGs with IEND; OpenCV only warns otherwise."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 64))
        tail = handle.read().rstrip(b"\x00")
    if path.suffix.lower() in JPEG_SUFFIXES:
        return not tail.endswith(b"\xff\xd9")
    if path.suffix.lower() == ".png":
        return b"IEND" not in tail[-12:]
    return False


def _reduced_flag(width: int, height: int, image_size: int) -> tuple[int, int]:
    """Largest OpenCV reduced-decode factor that keeps the short side ≥ image_size."""
    for factor, flag in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                         (2, cv2.IMREAD_REDUCED_COLOR_2)):
        if min(width, height) // factor >= image_size:
            return factor, flag
    return 1, cv2.IMREAD_COLOR


def colour_share(bgr: np.ndarray, tolerance: int) -> float:
    """Share of pixels whose channels differ by more than ``tolerance`` grey levels.

    A pixel's spread is its largest channel minus its smallest: 0 for grey, up to a few
    levels of JPEG chroma round-off on grey radiographs stored as RGB, far more for any
    drawn colour. A fourth (alpha) channel is ignored; single-channel input is grey: 0.0.
    """
    if bgr.ndim == 2 or bgr.shape[2] == 1:
        return 0.0
    channels = bgr[..., :3]
    spread = channels.max(axis=2) - channels.min(axis=2)  # max ≥ min: no uint8 wrap-around
    return float(np.count_nonzero(spread > tolerance) / spread.size)


def _check_colour_settings(policy: str, tolerance: int, min_share: float) -> None:
    """Refuse settings that would make the check meaningless, naming the config key."""
    if policy not in COLOUR_POLICIES:
        raise DataError(f"{COLOUR_KEY}.policy is {policy!r}; use one of {', '.join(COLOUR_POLICIES)}")
    whole = isinstance(tolerance, (int, np.integer)) and not isinstance(tolerance, bool)
    if not whole or not 0 <= tolerance < 255:
        raise DataError(f"{COLOUR_KEY}.tolerance is {tolerance!r}; use a whole number of grey levels, 0-254")
    if not 0 <= min_share < 1:
        raise DataError(f"{COLOUR_KEY}.min_share is {min_share!r}; use a share of pixels in [0, 1)")


def _decode(path: Path, image_size: int) -> tuple[np.ndarray, list[str]]:
    """The image as decoded (BGR, before resizing) and the conversions it needed."""
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes); remove or replace it")
    (width, height), conversions = _describe(path)
    if _is_truncated(path):
        raise DataError(f"{path}: truncated image (missing end marker); re-copy or remove it")
    factor, flag = _reduced_flag(width, height, max(image_size, DECODE_MIN_SIDE))
    if width * height > LARGE_IMAGE_PIXELS:
        conversions.append(f"very large image ({width}×{height}) decoded at 1/{factor} resolution")
    bgr = cv2.imread(str(path), flag)
    if bgr is None:
        raise DataError(f"{path}: OpenCV cannot decode this image; re-export it as PNG or JPEG")
    return bgr, conversions


def _resized_rgb(bgr: np.ndarray, image_size: int) -> np.ndarray:
    resized = cv2.resize(bgr, (image_size, image_size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)


def _grey(bgr: np.ndarray) -> np.ndarray:
    """Luminance in all three channels: removes the colour cue (not the drawn shapes)."""
    return cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


def load_image(path: str | Path, image_size: int) -> tuple[np.ndarray, list[str]]:
    """One image as ``(image_size, image_size, 3)`` RGB uint8, and its conversions."""
    bgr, conversions = _decode(Path(path), image_size)
    return _resized_rgb(bgr, image_size), conversions


def _overlay_error(root: Path, overlaid: dict[str, float], tolerance: int, min_share: float) -> str:
    listing = "\n".join(f"  - {root / path}: {share:.3%} coloured pixels" for path, share in overlaid.items())
    return (f"{len(overlaid)} image(s) carry colour annotations or overlays (more than {min_share:.3%} of "
            f"pixels whose channels differ by more than {tolerance} grey levels) and "
            f"{COLOUR_KEY}.policy is 'fail'; clean or remove them, or set {COLOUR_KEY}.policy to "
            f"'grey' (convert them to grey) or 'warn' (keep them, listed in the report):\n{listing}")


def load_images(
    root: str | Path,
    relative_paths: list[str],
    image_size: int,
    *,
    colour_policy: str,
    colour_tolerance: int,
    colour_min_share: float,
    workers: int | None = None,
) -> tuple[np.ndarray, dict]:
    """Decode all images in parallel and check them for colour; fail once, naming every bad file.

    An image is *overlaid* when its :func:`colour_share` exceeds ``colour_min_share``;
    ``colour_policy`` keeps it (``warn``), converts it to grey before resizing (``grey``)
    or refuses the dataset (``fail``). Every overlaid image is listed with its share in the
    returned ``conversions["colour"]["overlaid"]``, whatever the policy.
    """
    _check_colour_settings(colour_policy, colour_tolerance, colour_min_share)
    root = Path(root)
    array = np.empty((len(relative_paths), image_size, image_size, 3), dtype=np.uint8)

    def work(i: int) -> tuple[str | None, float | None, list[str]]:
        """(decode error, share if overlaid, conversions) of image ``i``; fills ``array[i]``."""
        try:
            bgr, conversions = _decode(root / relative_paths[i], image_size)
        except DataError as error:
            return str(error), None, []
        share = colour_share(bgr, colour_tolerance)
        overlaid = share > colour_min_share
        if overlaid and colour_policy == "grey":
            bgr = _grey(bgr)
            conversions.append(GREY_CONVERSION)
        array[i] = _resized_rgb(bgr, image_size)
        return None, share if overlaid else None, conversions

    with ThreadPoolExecutor(max_workers=workers or len(os.sched_getaffinity(0))) as pool:
        results = list(pool.map(work, range(len(relative_paths))))
    counts, notes, problems, overlaid = Counter(), {}, [], {}
    for path, (problem, share, conversions) in zip(relative_paths, results, strict=True):
        if problem:
            problems.append(problem)
        if share is not None:
            overlaid[path] = round(share, SHARE_DECIMALS)
        if conversions:
            notes[path] = conversions
            counts.update(conversions)
    overlaid = dict(sorted(overlaid.items()))
    messages = []
    if problems:
        listing = "\n".join(f"  - {p}" for p in sorted(problems))
        messages.append(f"{len(problems)} image(s) cannot be used:\n{listing}")
    if overlaid and colour_policy == "fail":
        messages.append(_overlay_error(root, overlaid, colour_tolerance, colour_min_share))
    if messages:
        raise DataError("\n".join(messages))
    colour = {"policy": colour_policy, "tolerance": int(colour_tolerance),
              "min_share": float(colour_min_share), "overlaid": overlaid}
    return array, {"counts": dict(sorted(counts.items())), "files": dict(sorted(notes.items())),
                   "colour": colour}


def colour_summary(overlaid: dict[str, float], labels: dict[str, str]) -> dict:
    """Overlaid images per class, and whether overlays are spread unevenly across classes.

    ``overlaid`` maps relative path → share (``conversions["colour"]["overlaid"]``),
    ``labels`` maps every image's relative path → class. Overlays that differ between
    classes are a shortcut a model can learn; the test is Fisher's exact test for two
    classes and a chi-square test of independence (overlaid or not × class) for more. The
    chi-square p-value is approximate when expected counts are small (below about 5).
    """
    unlabelled = sorted(set(overlaid) - set(labels))
    if unlabelled:
        raise ValueError(f"overlaid images without a class: {', '.join(unlabelled[:5])}")
    classes = {}
    for name in sorted(set(labels.values())):
        paths = [path for path, label in labels.items() if label == name]
        hits = sorted(path for path in paths if path in overlaid)
        classes[name] = {"images": len(paths), "overlaid": len(hits),
                         "share": round(len(hits) / len(paths), 4), "paths": hits}
    return {"images": len(labels), "overlaid": len(overlaid), "classes": classes,
            **_between_classes(classes)}


def _between_classes(classes: dict[str, dict]) -> dict:
    """Test of overlaid/not × class, or the reason there is none."""
    table = [[c["overlaid"], c["images"] - c["overlaid"]] for c in classes.values()]
    overlaid = sum(row[0] for row in table)
    clean = sum(row[1] for row in table)
    reason = ("no image is overlaid" if overlaid == 0 else "every image is overlaid" if clean == 0
              else "only one class" if len(table) < 2 else None)
    if reason:
        return {"test": None, "p_value": None, "differs": False, "reason": reason}
    from scipy import stats  # only here: the decode path does not need SciPy

    if len(table) == 2:
        test, p_value = "Fisher's exact test", stats.fisher_exact(table).pvalue
    else:
        test, p_value = "chi-square test of independence", stats.chi2_contingency(table).pvalue
    return {"test": test, "p_value": float(p_value), "differs": bool(p_value < SIGNIFICANCE),
            "reason": None}
