"""The traced inference pass on a hand-set model: the same probabilities as Keras's
``predict``, whatever the batch size and padding, in the images' order, and the
Grad-CAM map of each image's own predicted class."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BRIGHT, REGION, region_images, region_model

from scripts.train.inference import InferencePass

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def model():
    return region_model()


@pytest.fixture(scope="module")
def images():
    """Five different 8 px images: the three region images, dark noise (class 0) and dark
    noise with a bright pixel in the decisive square (class 1)."""
    rng = np.random.default_rng(4)
    noise = rng.integers(0, 90, (2, 8, 8, 3)).astype(np.uint8)
    noise[1, 0, 3] = 250
    return np.concatenate([region_images()[0], noise])


def test_probabilities_equal_keras_predict_and_the_pooled_features_by_hand(model, images):
    result = InferencePass(model, "features", batch_size=4).run(images)
    assert set(result) == {"probabilities", "logits", "pooled"}
    expected = model.predict(images.astype("float32"), batch_size=5, verbose=0)
    np.testing.assert_allclose(result["probabilities"], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(result["probabilities"].argmax(1), [1, 0, 0, 0, 1])
    grey = images.astype(float).mean(axis=-1)
    bright = np.maximum(grey[:, :REGION, :REGION] - BRIGHT, 0).sum(axis=(1, 2)) / 64
    np.testing.assert_allclose(result["pooled"], np.stack([bright, grey.mean(axis=(1, 2))], 1), rtol=1e-5)
    np.testing.assert_allclose(result["logits"], np.stack([0.01 * grey.mean(axis=(1, 2)) - bright, bright], 1),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cams", [False, True], ids=["forward", "with-cams"])
def test_batch_size_padding_and_order_do_not_change_the_outputs(model, images, cams):
    """Batches of 2 pad the last one (1 image + 1 copy), a batch of 8 pads 3 copies, a
    batch of 5 pads none. Fails if a padded copy or a misaligned slice reached the result."""
    unpadded = InferencePass(model, "features", batch_size=5).run(images, cams=cams)
    for batch_size in (2, 8):
        padded = InferencePass(model, "features", batch_size=batch_size).run(images, cams=cams)
        assert set(padded) == set(unpadded)
        for key, value in unpadded.items():
            assert padded[key].shape[0] == len(images)
            np.testing.assert_allclose(padded[key], value, rtol=1e-6, atol=1e-6)
    order = np.array([4, 2, 0, 3, 1])
    shuffled = InferencePass(model, "features", batch_size=2).run(images[order], cams=cams)
    for key, value in unpadded.items():
        np.testing.assert_allclose(shuffled[key], value[order], rtol=1e-6, atol=1e-6)


def test_each_image_gets_the_map_of_its_own_predicted_class(model):
    """Class 1 (patch in the decisive square): the patch; class 0: the grey image over its
    peak. Fails if every image were explained by one class, or by the probability."""
    images, mask = region_images()
    cams = InferencePass(model, "features", batch_size=4).run(images, cams=True)["cams"]
    assert cams.dtype == np.float16 and cams.shape == (3, 8, 8)
    np.testing.assert_allclose(cams[0].astype(float), mask, atol=1e-3)
    np.testing.assert_allclose(cams[1].astype(float), images[1, ..., 0] / 200, atol=1e-3)
    np.testing.assert_allclose(cams[2].astype(float), np.ones((8, 8)), atol=1e-3)
