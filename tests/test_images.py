"""Image decoding: every real-world oddity is converted consistently or named."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import DEMO
from PIL import Image

from scripts.images import load_image, load_images
from scripts.manifest import DataError

SOURCE = DEMO / "train" / "Normal" / "01.jpeg"


@pytest.fixture
def xray():
    return np.asarray(Image.open(SOURCE).convert("L"))


def test_real_image_becomes_rgb_uint8_of_the_requested_size():
    image, conversions = load_image(SOURCE, 64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert conversions == []


@pytest.mark.parametrize("mode, name, expected", [
    ("L", "gray.png", ["grayscale or palette to RGB"]),
    ("RGBA", "rgba.png", ["alpha channel dropped"]),
    ("I;16", "deep.png", ["grayscale or palette to RGB", "16-bit to 8-bit"]),
    ("CMYK", "cmyk.jpg", ["CMYK to RGB"]),
])
def test_conversions_are_counted_and_consistent(tmp_path, xray, mode, name, expected):
    reference, _ = load_image(SOURCE, 64)
    if mode == "I;16":
        Image.fromarray(xray.astype(np.uint16) * 257).save(tmp_path / name)
    else:
        Image.fromarray(xray).convert(mode).save(tmp_path / name)
    image, conversions = load_image(tmp_path / name, 64)
    assert conversions == expected
    assert image.shape == (64, 64, 3)
    # the same picture, whatever its encoding (JPEG re-encoding and CMYK round-off aside)
    assert np.abs(image.astype(int) - reference.astype(int)).mean() < 12


def test_exif_rotation_is_applied(tmp_path, xray):
    tall = np.zeros((80, 40), np.uint8)
    tall[:10] = 255  # bright band at the top
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate 90° clockwise
    Image.fromarray(np.ascontiguousarray(np.rot90(tall))).save(tmp_path / "r.jpg", exif=exif.tobytes())
    image, conversions = load_image(tmp_path / "r.jpg", 32)
    assert conversions == ["grayscale or palette to RGB", "EXIF rotation applied"]
    assert image[:4].mean() > 200 and image[-4:].mean() < 50


def test_huge_image_is_decoded_reduced_without_exhausting_memory(tmp_path):
    import resource

    big = np.full((10_000, 10_000), 128, np.uint8)
    cv2.imwrite(str(tmp_path / "huge.jpg"), big)
    del big
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    image, conversions = load_image(tmp_path / "huge.jpg", 64)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert conversions[-1] == "very large image (10000×10000) decoded at 1/8 resolution"
    assert image.shape == (64, 64, 3)
    assert grown_mb < 150  # a full decode would need 300 MB


@pytest.mark.parametrize("content, expected", [
    (b"", "empty file"),
    (b"this is not an image\n", "not a readable image"),
    (SOURCE.read_bytes()[:5000], "truncated image"),
])
def test_broken_files_are_named(tmp_path, content, expected):
    (tmp_path / "bad.jpeg").write_bytes(content)
    with pytest.raises(DataError, match=f"bad.jpeg: {expected}"):
        load_image(tmp_path / "bad.jpeg", 32)


def test_gif_is_rejected(tmp_path, xray):
    Image.fromarray(xray).save(tmp_path / "x.png", format="GIF")
    with pytest.raises(DataError, match="format GIF is not supported"):
        load_image(tmp_path / "x.png", 32)


def test_all_bad_files_are_reported_together(tmp_path):
    (tmp_path / "a.jpeg").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(b"text")
    (tmp_path / "ok.jpeg").write_bytes(SOURCE.read_bytes())
    with pytest.raises(DataError, match=r"2 image\(s\) cannot be used") as error:
        load_images(tmp_path, ["a.jpeg", "b.png", "ok.jpeg"], 32)
    assert "a.jpeg: empty file" in str(error.value) and "b.png: not a readable" in str(error.value)
