"""The training input pipeline: every image once per epoch, one batch shape, seeded
stateless augmentation on training batches only."""

from __future__ import annotations

import numpy as np

from scripts.train.input_pipeline import augmentation, epoch_order, padded_batches, train_dataset

AUGMENT = {"enabled": True, "flip": True, "rotation": 0.05, "shift": 0.1, "zoom": 0.1}


def batches(images, seed, settings, batch_size=4, weights=None):
    labels = np.arange(len(images), dtype=np.int32)
    weights = np.ones(len(images), np.float32) if weights is None else weights
    return [(x.numpy(), y.numpy(), w.numpy())
            for x, y, w in train_dataset(images, labels, weights, batch_size, seed, augmentation(settings))]


def images(n=10, size=16):
    return np.random.default_rng(0).integers(0, 255, (n, size, size, 3), dtype=np.uint8)


def test_same_seed_same_batches_other_seed_differs():
    first, again, other = (batches(images(), seed, AUGMENT) for seed in (3, 3, 4))
    assert len(first) == 3
    assert all((a[0] == b[0]).all() and (a[1] == b[1]).all() for a, b in zip(first, again, strict=True))
    assert not all((a[0] == b[0]).all() for a, b in zip(first, other, strict=True))


def test_every_image_once_per_epoch_in_one_batch_shape():
    """10 images in batches of 4: the last batch is padded with two repeats of weight 0."""
    weights = np.linspace(0.5, 2.0, 10).astype(np.float32)
    result = batches(images(10), 1, AUGMENT, weights=weights)
    assert [x.shape for x, _, _ in result] == [(4, 16, 16, 3)] * 3
    labels = np.concatenate([y for _, y, _ in result])
    sample_weights = np.concatenate([w for _, _, w in result])
    real = sample_weights > 0
    assert sorted(labels[real]) == list(range(10))  # each image exactly once
    assert real.sum() == 10 and (sample_weights[real] == weights[labels[real]]).all()
    assert list(real) == [True] * 10 + [False] * 2


def test_epoch_order_pads_to_whole_batches_even_below_one_batch():
    order, mask = epoch_order(3, 8, seed=5)
    assert len(order) == 8 and sorted(order[:3]) == [0, 1, 2] and mask.tolist() == [1] * 3 + [0] * 5


def test_flip_only_gives_the_image_or_its_mirror_and_flips_some():
    data = images(16)  # random pixels: no image equals its mirror
    mirrored = plain = 0
    for x, y, _ in batches(data, 2, {"enabled": True, "flip": True}):
        for augmented, index in zip(x, y, strict=True):
            original = data[index].astype(np.float32)
            is_plain, is_mirror = (augmented == original).all(), (augmented == original[:, ::-1]).all()
            assert is_plain != is_mirror
            plain += is_plain
            mirrored += is_mirror
    assert plain + mirrored == 16 and plain > 0 and mirrored > 0


def test_augmentation_off_passes_images_through():
    assert augmentation({"enabled": False, **{k: v for k, v in AUGMENT.items() if k != "enabled"}}) is None
    data = images(8)
    result = batches(data, 2, {"enabled": True})
    assert len(result) == 2
    for x, y, _ in result:
        assert (x == data[y].astype(np.float32)).all()


def test_padded_batches_keep_one_shape():
    shapes = [(batch.shape, real) for batch, real in padded_batches(images(10), 4)]
    assert shapes == [((4, 16, 16, 3), 4), ((4, 16, 16, 3), 4), ((4, 16, 16, 3), 2)]
