"""The training input pipeline: seeded, stateless augmentation on training batches only."""

from __future__ import annotations

import numpy as np

from scripts.pipeline import augmentation, padded_batches, train_dataset

AUGMENT = {"enabled": True, "flip": True, "rotation": 0.05, "shift": 0.1, "zoom": 0.1}


def batches(images, seed, settings):
    labels = np.arange(len(images), dtype=np.int32)
    return [(x.numpy(), y.numpy()) for x, y in train_dataset(images, labels, 4, seed, augmentation(settings))]


def images(n=10, size=16):
    return np.random.default_rng(0).integers(0, 255, (n, size, size, 3), dtype=np.uint8)


def test_same_seed_same_batches_other_seed_differs():
    first, again, other = (batches(images(), seed, AUGMENT) for seed in (3, 3, 4))
    assert all((a[0] == b[0]).all() and (a[1] == b[1]).all() for a, b in zip(first, again, strict=True))
    assert not all((a[0] == b[0]).all() for a, b in zip(first, other, strict=True))


def test_every_batch_has_one_shape_and_each_image_appears_at_most_once():
    result = batches(images(10), 1, AUGMENT)
    assert [x.shape for x, _ in result] == [(4, 16, 16, 3)] * 2  # the partial batch is dropped
    seen = np.concatenate([y for _, y in result])
    assert len(set(seen)) == len(seen) == 8


def test_flip_only_gives_the_image_or_its_mirror():
    data = images(8)
    for x, y in batches(data, 2, {"enabled": True, "flip": True}):
        for augmented, index in zip(x, y, strict=True):
            original = data[index].astype(np.float32)
            assert (augmented == original).all() or (augmented == original[:, ::-1]).all()


def test_augmentation_off_passes_images_through():
    assert augmentation({"enabled": False, **{k: v for k, v in AUGMENT.items() if k != "enabled"}}) is None
    data = images(8)
    for x, y in batches(data, 2, {"enabled": True}):
        assert (x == data[y].astype(np.float32)).all()


def test_padded_batches_keep_one_shape():
    shapes = [(batch.shape, real) for batch, real in padded_batches(images(10), 4)]
    assert shapes == [((4, 16, 16, 3), 4), ((4, 16, 16, 3), 4), ((4, 16, 16, 3), 2)]
