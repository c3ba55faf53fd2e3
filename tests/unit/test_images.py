"""Image decoding: every real-world oddity is converted consistently or named, and
burned-in colour (annotations, overlays) is measured and handled per policy."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from conftest import DEMO
from PIL import Image

from scripts.data.images import colour_share, colour_summary, load_image, load_images
from scripts.data.manifest import DataError

SOURCE = DEMO / "train" / "Normal" / "01.jpeg"
# The recommended data.colour_overlays settings (see the lead's config schema): real grey
# radiographs differ between channels by at most 19 levels (JPEG chroma, tinted borders),
# the smallest drawn colour marker tried covers ~0.1 % of the pixels.
TOLERANCE, MIN_SHARE = 32, 0.0005


@pytest.fixture
def xray():
    return np.asarray(Image.open(SOURCE).convert("L"))


def test_real_image_becomes_rgb_uint8_of_the_requested_size():
    image, conversions = load_image(SOURCE, 64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert conversions == []


@pytest.fixture
def colour_xray():
    """The radiograph as RGB with distinct channels (red brighter, blue darker), so that
    a red/blue swap changes the picture."""
    grey = np.asarray(Image.open(SOURCE).convert("L")).astype(np.int16)
    return np.stack([np.clip(grey + 40, 0, 255), grey, np.clip(grey - 40, 0, 255)], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("mode, name, expected, tolerance", [
    ("L", "gray.png", ["grayscale or palette to RGB"], 0),
    ("RGBA", "rgba.png", ["alpha channel dropped"], 0),
    ("CMYK", "cmyk.jpg", ["CMYK to RGB"], 6),  # lossy JPEG and CMYK round-off
])
def test_conversions_are_counted_and_consistent(tmp_path, colour_xray, mode, name, expected, tolerance):
    """Lossless encodings decode to exactly the picture (channel order included)."""
    source = tmp_path / "source.png"
    Image.fromarray(colour_xray).save(source)
    reference, conversions = load_image(source, 64)
    assert conversions == []
    assert reference[..., 0].mean() > reference[..., 2].mean() + 60  # RGB order, not BGR
    picture = Image.fromarray(colour_xray)
    picture = picture.convert("L") if mode == "L" else picture.convert(mode)
    picture.save(tmp_path / name)
    image, conversions = load_image(tmp_path / name, 64)
    assert conversions == expected and image.shape == (64, 64, 3)
    if mode == "L":
        expected_image, _ = load_image(source, 64)
        grey = np.asarray(picture.resize((64, 64), Image.Resampling.BOX))
        assert np.abs(image[..., 0].astype(int) - grey.astype(int)).max() <= 1
        assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    else:
        assert np.abs(image.astype(int) - reference.astype(int)).mean() <= tolerance


def test_sixteen_bit_keeps_the_high_byte(tmp_path, xray):
    """Values whose high and low bytes differ: keeping the low byte would scramble them."""
    deep = xray.astype(np.uint16) * 256 + 37  # high byte = the picture, low byte = 37 everywhere
    Image.fromarray(deep).save(tmp_path / "deep.png")
    image, conversions = load_image(tmp_path / "deep.png", 64)
    assert conversions == ["grayscale or palette to RGB", "16-bit to 8-bit"]
    Image.fromarray(xray).save(tmp_path / "eight.png")
    eight, _ = load_image(tmp_path / "eight.png", 64)
    assert np.abs(image.astype(int) - eight.astype(int)).max() <= 1


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
    """Peak memory of a fresh process that decodes a 10,000 × 10,000 JPEG (a full decode
    needs 300 MB for the pixels alone)."""
    import subprocess
    import sys

    from conftest import PROJECT

    big = np.full((10_000, 10_000), 128, np.uint8)
    cv2.imwrite(str(tmp_path / "huge.jpg"), big)
    del big
    code = ("import resource, sys; from scripts.data.images import load_image; "
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
            "image, conversions = load_image(sys.argv[1], 64); "
            "print(image.shape, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024); "
            "print(conversions[-1])")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "huge.jpg")], capture_output=True,
                          text=True, cwd=PROJECT, check=True)
    shape_and_growth, note = done.stdout.strip().splitlines()
    assert note == "very large image (10000×10000) decoded at 1/8 resolution"
    assert shape_and_growth.startswith("(64, 64, 3)")
    assert float(shape_and_growth.split()[-1]) < 150


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
        load_images(tmp_path, ["a.jpeg", "b.png", "ok.jpeg"], 32, colour_policy="warn",
                    colour_tolerance=TOLERANCE, colour_min_share=MIN_SHARE)
    assert "a.jpeg: empty file" in str(error.value) and "b.png: not a readable" in str(error.value)


# --- colour overlays -------------------------------------------------------------------

def old_style_picture(grey: np.ndarray, regions: int = 200, seed: int = 0) -> np.ndarray:
    """What the pre-2026-11-29 demo held: posterised superpixel means with bright green
    region outlines (Voronoi cells of random seeds stand in for the superpixels)."""
    height, width = grey.shape
    centres = np.random.default_rng(seed).uniform((0, 0), (height, width), size=(regions, 2))
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    distances = (rows[..., None] - centres[:, 0]) ** 2 + (cols[..., None] - centres[:, 1]) ** 2
    labels = np.argmin(distances, axis=2)
    sums = np.bincount(labels.ravel(), grey.ravel().astype(float), regions)
    means = sums / np.maximum(np.bincount(labels.ravel(), minlength=regions), 1)
    picture = cv2.cvtColor((means[labels] // 43 * 43 + 21).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    for region in range(regions):
        mask = (labels == region).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(picture, contours, -1, (0, 255, 0), 1)
    return picture


def annotated(grey: np.ndarray) -> np.ndarray:
    """A real radiograph with a small red arrow and a small yellow side marker."""
    picture = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    cv2.arrowedLine(picture, (200, 60), (179, 81), (0, 0, 255), 2, tipLength=0.3)
    cv2.putText(picture, "L", (20, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1)
    return picture


def colour_settings(policy: str) -> dict:
    return {"colour_policy": policy, "colour_tolerance": TOLERANCE, "colour_min_share": MIN_SHARE}


@pytest.fixture
def mixed_folder(tmp_path, xray):
    """Two clean demo radiographs and two old-style overlaid pictures (JPEG and PNG)."""
    for name in ("clean1.jpeg", "clean2.jpeg"):
        (tmp_path / name).write_bytes(SOURCE.read_bytes() if name == "clean1.jpeg"
                                      else (DEMO / "train" / "Covid" / "COVID-00003a.jpg").read_bytes())
    cv2.imwrite(str(tmp_path / "old1.jpeg"), old_style_picture(xray, seed=1), [cv2.IMWRITE_JPEG_QUALITY, 85])
    cv2.imwrite(str(tmp_path / "old2.png"), old_style_picture(xray, seed=2))
    return tmp_path


NAMES = ["clean1.jpeg", "clean2.jpeg", "old1.jpeg", "old2.png"]


def test_colour_share_counts_pixels_whose_channels_differ_by_more_than_the_tolerance():
    bgr = np.zeros((2, 5, 3), np.uint8)
    bgr[0, 0] = (10, 10, 10)     # grey: spread 0
    bgr[0, 1] = (10, 30, 10)     # spread 20: not above 20
    bgr[0, 2] = (10, 31, 10)     # spread 21
    bgr[0, 3] = (0, 255, 0)      # bright green outline
    bgr[0, 4] = (255, 250, 0)    # cyan-ish: spread 255
    assert colour_share(bgr, 20) == 3 / 10
    assert colour_share(bgr, 0) == 4 / 10
    assert colour_share(bgr, 254) == 2 / 10
    assert colour_share(np.dstack([bgr, np.full((2, 5), 255, np.uint8)]), 20) == 3 / 10  # alpha ignored
    assert colour_share(bgr[..., 1], 0) == 0.0 and colour_share(bgr[..., 1:2], 0) == 0.0


def test_warn_keeps_overlaid_images_and_lists_them_with_their_share(mixed_folder):
    array, conversions = load_images(mixed_folder, NAMES, 64, **colour_settings("warn"))
    colour = conversions["colour"]
    assert colour["policy"] == "warn" and colour["tolerance"] == 32 and colour["min_share"] == 0.0005
    assert list(colour["overlaid"]) == ["old1.jpeg", "old2.png"]
    for name in ("old1.jpeg", "old2.png"):
        expected = colour_share(cv2.imread(str(mixed_folder / name)), TOLERANCE)
        assert colour["overlaid"][name] == round(expected, 6) and expected > 0.05
        assert np.array_equal(array[NAMES.index(name)], load_image(mixed_folder / name, 64)[0])  # kept
    assert "colour overlay converted to grey" not in conversions["counts"]


def test_grey_converts_only_overlaid_images_and_counts_it(mixed_folder):
    kept, _ = load_images(mixed_folder, NAMES, 64, **colour_settings("warn"))
    array, conversions = load_images(mixed_folder, NAMES, 64, **colour_settings("grey"))
    assert list(conversions["colour"]["overlaid"]) == ["old1.jpeg", "old2.png"]
    assert conversions["counts"]["colour overlay converted to grey"] == 2
    assert conversions["files"]["old2.png"] == ["colour overlay converted to grey"]
    for i in (2, 3):
        assert (array[i, ..., 0] == array[i, ..., 1]).all() and (array[i, ..., 1] == array[i, ..., 2]).all()
        assert not np.array_equal(array[i], kept[i])
    assert np.array_equal(array[:2], kept[:2])  # clean images untouched


def test_fail_names_every_overlaid_file_with_its_share_and_the_config_key(mixed_folder):
    with pytest.raises(DataError, match=r"2 image\(s\) carry colour") as error:
        load_images(mixed_folder, NAMES, 64, **colour_settings("fail"))
    message = str(error.value)
    assert "data.colour_overlays.policy" in message
    for name in ("old1.jpeg", "old2.png"):
        share = colour_share(cv2.imread(str(mixed_folder / name)), TOLERANCE)
        assert f"{mixed_folder / name}: {share:.3%} coloured pixels" in message
    assert "clean1" not in message and "clean2" not in message


def test_fail_reports_overlays_together_with_broken_files(mixed_folder):
    (mixed_folder / "empty.jpeg").write_bytes(b"")
    with pytest.raises(DataError) as error:
        load_images(mixed_folder, [*NAMES, "empty.jpeg"], 32, **colour_settings("fail"))
    message = str(error.value)
    assert "1 image(s) cannot be used" in message and "empty.jpeg: empty file" in message
    assert "2 image(s) carry colour" in message


@pytest.mark.parametrize("key, settings", [
    ("policy", {"colour_policy": "ignore"}),
    ("tolerance", {"colour_tolerance": 255}),
    ("tolerance", {"colour_tolerance": 2.5}),
    ("min_share", {"colour_min_share": 1.0}),
])
def test_bad_colour_settings_name_their_config_key(mixed_folder, key, settings):
    with pytest.raises(DataError, match=f"data.colour_overlays.{key} is"):
        load_images(mixed_folder, NAMES, 32, **{**colour_settings("warn"), **settings})


def test_grey_radiographs_resaved_as_rgb_jpeg_are_not_flagged(tmp_path):
    # the demo's most chroma-noisy real radiographs (a faint tint), and a grayscale one
    sources = ["test/Covid/auntminnie-d-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.jpeg",
               "train/Covid/080.jpg", "train/Covid/COVID-00003a.jpg"]
    names = []
    for i, source in enumerate(sources):
        Image.open(DEMO / source).convert("RGB").save(tmp_path / f"{i}.jpg", quality=75)
        names.append(f"{i}.jpg")
    noisy = colour_share(cv2.imread(str(tmp_path / "0.jpg")), 2)
    assert noisy > 0.5  # channels do differ, by a few levels, on most pixels
    _, conversions = load_images(tmp_path, names, 64, **colour_settings("fail"))
    assert conversions["colour"]["overlaid"] == {}


def test_small_coloured_annotation_on_a_real_radiograph_is_flagged(tmp_path, xray):
    cv2.imwrite(str(tmp_path / "arrow.jpg"), annotated(xray), [cv2.IMWRITE_JPEG_QUALITY, 85])
    _, conversions = load_images(tmp_path, ["arrow.jpg"], 64, **colour_settings("warn"))
    share = conversions["colour"]["overlaid"]["arrow.jpg"]
    assert MIN_SHARE < share < 0.01  # small, yet flagged


def test_the_rebuilt_demo_has_no_colour_overlays():
    paths = sorted(str(p.relative_to(DEMO)) for p in DEMO.rglob("*") if p.is_file())
    assert len(paths) == 317
    _, conversions = load_images(DEMO, paths, 32, **colour_settings("fail"), workers=2)
    assert conversions["colour"]["overlaid"] == {}


def labels_for(counts: dict[str, int]) -> dict[str, str]:
    return {f"{name}/{i}.png": name for name, n in counts.items() for i in range(n)}


def test_colour_summary_three_classes_chi_square_by_hand():
    from scipy import stats

    labels = labels_for({"A": 10, "B": 10, "C": 5})
    overlaid = {"A/0.png": 0.2, "A/1.png": 0.1, "A/2.png": 0.1, "A/3.png": 0.1, "B/7.png": 0.01}
    summary = colour_summary(overlaid, labels)
    assert summary["images"] == 25 and summary["overlaid"] == 5
    assert summary["classes"]["A"] == {"images": 10, "overlaid": 4, "share": 0.4,
                                       "paths": ["A/0.png", "A/1.png", "A/2.png", "A/3.png"]}
    assert summary["classes"]["B"] == {"images": 10, "overlaid": 1, "share": 0.1, "paths": ["B/7.png"]}
    assert summary["classes"]["C"] == {"images": 5, "overlaid": 0, "share": 0.0, "paths": []}
    # expected counts overlaid/not: A 2/8, B 2/8, C 1/4 → χ² = 2 + .5 + .5 + .125 + 1 + .25
    statistic = 4.375
    assert summary["p_value"] == pytest.approx(stats.chi2.sf(statistic, 2))
    assert summary["p_value"] == pytest.approx(math.exp(-statistic / 2))  # χ² with 2 dof
    assert summary["test"] == "chi-square test of independence" and summary["differs"] is False


def test_colour_summary_flags_overlays_confined_to_one_class():
    labels = labels_for({"A": 10, "B": 10, "C": 5})
    summary = colour_summary({f"A/{i}.png": 0.3 for i in range(8)}, labels)
    # expected A 3.2/6.8, B 3.2/6.8, C 1.6/3.4
    statistic = 4.8**2 / 3.2 + 4.8**2 / 6.8 + 3.2**2 / 3.2 + 3.2**2 / 6.8 + 1.6**2 / 1.6 + 1.6**2 / 3.4
    assert summary["p_value"] == pytest.approx(math.exp(-statistic / 2)) and summary["differs"] is True


def test_colour_summary_two_classes_uses_fishers_exact_test():
    labels = labels_for({"A": 6, "B": 6})
    summary = colour_summary({"A/0.png": 0.1, "A/1.png": 0.1, "A/2.png": 0.1}, labels)
    # hypergeometric: 12 images, 3 overlaid, 6 in A; P(3 in A) = P(0 in A) = C(6,3)/C(12,3)
    tail = math.comb(6, 3) / math.comb(12, 3)
    assert summary["test"] == "Fisher's exact test"
    assert summary["p_value"] == pytest.approx(2 * tail) and summary["differs"] is False


@pytest.mark.parametrize("overlaid, reason", [
    ({}, "no image is overlaid"),
    ({f"{c}/{i}.png": 0.1 for c in "AB" for i in range(3)}, "every image is overlaid"),
])
def test_colour_summary_without_a_possible_test(overlaid, reason):
    summary = colour_summary(overlaid, labels_for({"A": 3, "B": 3}))
    assert summary["test"] is None and summary["p_value"] is None and summary["differs"] is False
    assert summary["reason"] == reason


def test_colour_summary_is_json_serialisable_and_rejects_unlabelled_paths():
    import json

    labels = labels_for({"A": 4, "B": 4, "C": 4})
    json.dumps(colour_summary({"A/0.png": 0.5}, labels))
    with pytest.raises(ValueError, match="Z/0.png"):
        colour_summary({"Z/0.png": 0.5}, labels)


def test_colour_share_does_not_depend_on_the_image_size(tmp_path, xray):
    big = cv2.cvtColor(cv2.resize(xray, (2048, 2048)), cv2.COLOR_GRAY2BGR)
    for at in range(50, 2048, 97):  # thin green lines, averaged away more at 1/8 than at 1/4
        cv2.line(big, (at, 0), (at, 2047), (0, 255, 0), 2)
    cv2.imwrite(str(tmp_path / "big.jpg"), big, [cv2.IMWRITE_JPEG_QUALITY, 85])
    shares = {size: load_images(tmp_path, ["big.jpg"], size, **colour_settings("warn"))[1]
              ["colour"]["overlaid"]["big.jpg"] for size in (32, 300)}
    assert shares[32] == shares[300]  # both measured on the 1/4 decode (512 px), not 1/8 and 1/4


def test_prepare_step_passes_the_colour_settings_through(mixed_folder, tmp_path_factory, capsys):
    import json

    import pandas as pd

    from scripts.__main__ import main

    out = tmp_path_factory.mktemp("prepare")
    pd.DataFrame({"path": NAMES, "label": ["new", "new", "old", "old"]}).to_csv(out / "index.csv", index=False)
    common = ["prepare", "--root", str(mixed_folder), "--index", str(out / "index.csv"), "--image-size", "32",
              "--images", str(out / "images.npy"), "--conversions", str(out / "conversions.json"),
              "--colour"]
    assert main([*common, '{"policy": "grey", "tolerance": 32, "min_share": 0.0005}']) == 0
    colour = json.loads((out / "conversions.json").read_text())["colour"]
    assert colour["policy"] == "grey" and list(colour["overlaid"]) == ["old1.jpeg", "old2.png"]
    assert colour["summary"]["classes"]["old"]["overlaid"] == 2 and colour["summary"]["classes"]["new"]["overlaid"] == 0
    assert np.load(out / "images.npy").shape == (4, 32, 32, 3)
    assert main([*common, '{"policy": "fail", "tolerance": 32, "min_share": 0.0005}']) == 1
    assert "data.colour_overlays.policy is 'fail'" in capsys.readouterr().err
