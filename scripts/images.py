"""Decode every image once, convert it consistently, and cache it as one array.

Decoding is done with OpenCV (not ``tf.io``) because it honours EXIF orientation,
converts CMYK, 16-bit and grayscale images and can decode huge JPEGs at reduced
resolution. The result is one ``uint8`` array per dataset × image size that every
training and evaluation job memory-maps instead of decoding again.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from scripts.manifest import DataError

# Header reads only; pixels are decoded by OpenCV with its own size limit.
Image.MAX_IMAGE_PIXELS = None
EXIF_ORIENTATION = 0x0112
JPEG_SUFFIXES = {".jpg", ".jpeg"}
# Above this many pixels an image is reported: it is likely a scan or stitched
# composite, and its reduced-resolution decode is worth knowing about.
LARGE_IMAGE_PIXELS = 25_000_000


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


def load_image(path: str | Path, image_size: int) -> tuple[np.ndarray, list[str]]:
    """One image as ``(image_size, image_size, 3)`` RGB uint8, and its conversions."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes); remove or replace it")
    (width, height), conversions = _describe(path)
    if _is_truncated(path):
        raise DataError(f"{path}: truncated image (missing end marker); re-copy or remove it")
    factor, flag = _reduced_flag(width, height, image_size)
    if width * height > LARGE_IMAGE_PIXELS:
        conversions.append(f"very large image ({width}×{height}) decoded at 1/{factor} resolution")
    bgr = cv2.imread(str(path), flag)
    if bgr is None:
        raise DataError(f"{path}: OpenCV cannot decode this image; re-export it as PNG or JPEG")
    resized = cv2.resize(bgr, (image_size, image_size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB), conversions


def load_images(
    root: str | Path, relative_paths: list[str], image_size: int, workers: int | None = None
) -> tuple[np.ndarray, dict]:
    """Decode all images in parallel; fail once, naming every bad file."""
    array = np.empty((len(relative_paths), image_size, image_size, 3), dtype=np.uint8)
    counts, notes, problems = Counter(), {}, []

    def work(i: int) -> None:
        try:
            array[i], conversions = load_image(Path(root) / relative_paths[i], image_size)
        except DataError as error:
            problems.append(str(error))
            return
        if conversions:
            notes[relative_paths[i]] = conversions
            counts.update(conversions)

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        list(pool.map(work, range(len(relative_paths))))
    if problems:
        listing = "\n".join(f"  - {p}" for p in sorted(problems))
        raise DataError(f"{len(problems)} image(s) cannot be used:\n{listing}")
    return array, {"counts": dict(sorted(counts.items())), "files": dict(sorted(notes.items()))}
