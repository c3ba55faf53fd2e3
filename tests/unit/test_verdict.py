"""The verdict's claims on hand-built comparison rows: what "beats" needs, and sentences that
never read a non-significant difference as "never beats" or "stops beating"."""

from __future__ import annotations

import numpy as np

from scripts.stats.comparisons import largest_family
from scripts.stats.verdict import TOO_FEW_SEEDS, beats, learning_statements, outcome


def point(fraction: float, n_train: int, difference: float, p_holm: float, n_pairs: int = 5) -> dict:
    return {"model": "vgg16", "strategy": "frozen", "weights": "imagenet", "fraction": fraction, "n_train": n_train,
            "difference": difference, "p_holm": p_holm, "n_pairs": n_pairs, "beats": None}


def statement(*points: dict) -> dict:
    rows = [{**p, "beats": beats(p)} for p in points]
    (only,) = learning_statements(rows)
    return only


def test_not_significant_is_not_never_beats():
    said = statement(point(0.25, 15, 0.04, 0.3), point(1.0, 60, 0.02, 0.6))
    assert "never" not in said["text"]  # fails if "not significant" read as "never beats"
    assert said["text"] == ("shows no significant difference from the scratch CNN baseline at 15 (25%), 60 (100%) "
                            "training images (which does not show that they are equal)")
    assert (said["beats_at"], said["not_at"], said["worse_at"]) == ([], [0.25, 1.0], [])


def test_a_win_at_small_sizes_only_is_not_stops_beating():
    said = statement(point(0.25, 15, 0.1, 0.01), point(1.0, 60, 0.01, 0.4))
    assert "stops" not in said["text"] and "only from" not in said["text"]
    assert said["text"] == ("beats the scratch CNN baseline at 15 (25%) training images; shows no significant "
                            "difference from the scratch CNN baseline at 60 (100%) training images (which does not "
                            "show that they are equal)")
    assert said["beats_at"] == [0.25]


def test_a_significant_loss_is_said_to_be_worse():
    said = statement(point(0.25, 15, -0.1, 0.001), point(1.0, 60, 0.1, 0.001))
    assert said["text"] == ("beats the scratch CNN baseline at 60 (100%) training images; is worse than the "
                            "scratch CNN baseline at 15 (25%) training images")
    assert said["worse_at"] == [0.25] and said["beats_at"] == [1.0]


def test_fewer_than_three_paired_seeds_make_no_claim():
    tiny_p = point(1.0, 60, 0.1, 0.001, n_pairs=TOO_FEW_SEEDS - 1)
    assert TOO_FEW_SEEDS == 3
    assert not beats(tiny_p) and outcome(tiny_p) == "too few seeds"  # fails if seeds were not counted
    said = statement(point(0.25, 15, 0.1, 0.001, n_pairs=2), tiny_p)
    assert said["beats_at"] == [] and said["too_few_seeds"]
    assert said["text"] == ("has fewer than 3 seeds paired with the scratch CNN baseline at 15 (25%), 60 (100%) "
                            "training images: no claim either way")
    assert beats(point(1.0, 60, 0.1, 0.001, n_pairs=3))


def test_a_nan_p_value_claims_nothing():
    assert outcome(point(1.0, 60, 0.1, np.nan)) == "no significant difference"


def test_largest_family_counts_the_comparisons_whose_reference_ran():
    def config(model, strategy, weights, fraction):
        return {"dataset": "d", "model": model, "strategy": strategy, "weights": weights, "fraction": fraction}

    configs = [config("scratch_cnn", "scratch", "none", 1.0), config("vgg16", "frozen", "imagenet", 1.0),
               config("vgg16", "full", "imagenet", 1.0), config("resnet50", "full", "imagenet", 1.0),
               config("vgg16", "frozen", "imagenet", 0.5), config("vgg16", "frozen", "none", 0.5),
               config("resnet50", "frozen", "imagenet", 0.5), config("resnet50", "frozen", "hed", 0.5)]
    # at 1.0: three against the baseline; at 0.5 no baseline, and one source with its random init
    assert largest_family(configs) == 3
    assert largest_family(configs[4:]) == 1
