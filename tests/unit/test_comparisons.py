"""Configurations against the scratch CNN baseline and against random init: which pairs are
compared, on which seeds, and how their p-values are grouped and adjusted. The metric on
every resample is made up (constant per seed), so the differences are known exactly."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from scripts.stats import comparisons as cmp
from scripts.stats import stats as st
from scripts.stats.verdict import NO_DIFFERENCE, outcome

B = 99
BOOTSTRAP = st.SharedBootstrap(np.array([0, 1, 0, 1]), B, seed=0, positive=None)


def config(model: str, strategy: str, weights: str = "imagenet", fraction: float = 1.0, dataset: str = "tiny"):
    return {"dataset": dataset, "model": model, "strategy": strategy, "weights": weights, "fraction": fraction}


BASE = config("scratch_cnn", "scratch", "none")


def scores(per_seed: dict[int, float]) -> cmp.Resampled:
    """A configuration whose seed ``s`` scores ``per_seed[s]`` on the test set and every resample."""
    seeds = tuple(per_seed)
    values = np.array([per_seed[s] for s in seeds])
    return cmp.Resampled(seeds, np.repeat(values[:, None], B, axis=1), values)


def resampled(entries: list[tuple[dict, dict[int, float]]], metrics=("accuracy",)) -> dict:
    return {(tuple(c[k] for k in cmp.CONFIG), metric): scores(s) for c, s in entries for metric in metrics}


def test_paired_uses_only_the_seeds_both_have_and_nothing_without_the_reference():
    frozen = config("vgg16", "frozen")
    table = resampled([(frozen, {1: 0.9, 2: 0.8, 3: 0.1}), (BASE, {2: 0.5, 1: 0.6, 4: 0.0})])
    (row,) = cmp.paired(frozen, {**frozen, **cmp.BASELINE}, table, ["accuracy"], BOOTSTRAP)
    assert row["n_pairs"] == 2  # seeds 1 and 2: 3 and 4 have no partner
    assert row["difference"] == pytest.approx((0.9 - 0.6 + 0.8 - 0.5) / 2)
    assert row["low"] == pytest.approx(0.3) and row["high"] == pytest.approx(0.3)
    assert row["p_value"] == pytest.approx(0.0) and row["se"] == pytest.approx(0.0)  # both seeds win by 0.3
    assert {k: row[k] for k in cmp.CONFIG} == frozen
    assert cmp.paired(frozen, config("resnet50", "frozen"), table, ["accuracy"], BOOTSTRAP) == []


def test_versus_baseline_compares_every_other_configuration_at_its_fraction_and_holds_out_the_prespecified():
    frozen, full, half = config("vgg16", "frozen"), config("vgg16", "full"), config("vgg16", "frozen", fraction=0.5)
    summary = [BASE, {**BASE, "fraction": 0.5}, frozen, full, half]
    table = resampled([(BASE, {1: 0.5}), ({**BASE, "fraction": 0.5}, {1: 0.4}), (frozen, {1: 0.7}),
                       (full, {1: 0.5}), (half, {1: 0.3})], metrics=("accuracy", "auc"))
    prespecified = (tuple(frozen.values()), "accuracy")
    rows = cmp.versus_baseline(summary, table, ["accuracy", "auc"], BOOTSTRAP, prespecified)
    found = {(r["strategy"], r["fraction"], r["metric"]): r for r in rows}
    assert len(rows) == 6 and not any(r["model"] == "scratch_cnn" for r in rows)
    assert found["frozen", 0.5, "accuracy"]["difference"] == pytest.approx(0.3 - 0.4)  # against its own fraction
    chosen = found["frozen", 1.0, "accuracy"]
    assert (chosen["family"], chosen["family_size"], chosen["p_holm"]) == ("prespecified", 1, chosen["p_value"])
    # the full strategy ties the baseline: every resampled difference is 0
    assert found["full", 1.0, "accuracy"]["p_value"] == 1.0
    others = [r for r in rows if r["family"] == "baseline"]
    assert len(others) == 5
    assert {(r["fraction"], r["metric"]): r["family_size"] for r in others} == {
        (1.0, "accuracy"): 1, (1.0, "auc"): 2, (0.5, "accuracy"): 1, (0.5, "auc"): 1}
    auc = [found[s, 1.0, "auc"] for s in ("frozen", "full")]
    assert [r["p_holm"] for r in auc] == pytest.approx(list(st.holm([r["p_value"] for r in auc])))


def test_seeds_two_three_and_five_points_better_on_a_large_test_set_make_no_claim():
    """Per-seed differences +0.02, +0.03, +0.05 and no test-image variation: the paired t over
    the seeds gives p = 0.063 and [-0.005, 0.071]; drawing the seeds with replacement gave
    p = 0.002, [0.02, 0.05] and "beats"."""
    frozen = config("vgg16", "frozen")
    table = resampled([(frozen, {1: 0.87, 2: 0.88, 3: 0.90}), (BASE, {1: 0.85, 2: 0.85, 3: 0.85})])
    rows = cmp.paired(frozen, {**frozen, **cmp.BASELINE}, table, ["accuracy"], BOOTSTRAP)
    (row,) = cmp.with_holm(rows, "baseline", (cmp.config_key(frozen), "accuracy"), meaningful_difference=0.02)
    assert row["p_value"] == pytest.approx(0.063, abs=5e-4) and outcome(row) == NO_DIFFERENCE
    assert (row["low"], row["high"]) == pytest.approx((-0.005, 0.071), abs=5e-4)
    # 80% power at 0.05 with 2 degrees of freedom takes about 5.7 standard errors (0.0088 each)
    assert row["alpha"] == 0.05 and row["detectable"] == pytest.approx(0.050, abs=0.001)
    assert stats.nct.sf(stats.t.ppf(0.975, 2), 2, row["detectable"] / row["se"]) == pytest.approx(0.8, abs=1e-3)
    assert st.detectable_difference(row["seed_variance"], 0.0, int(row["seeds_needed"]), 0.05) <= 0.02


def test_versus_random_init_compares_pretrained_sources_with_the_same_backbone_from_random_weights():
    imagenet, hed = config("vgg16", "frozen"), config("vgg16", "frozen", "hed")
    random = config("vgg16", "frozen", "none")
    unpaired = config("resnet50", "frozen")  # its random-init twin did not run
    summary = [BASE, imagenet, hed, random, unpaired]
    table = resampled([(BASE, {1: 0.5}), (imagenet, {1: 0.8}), (hed, {1: 0.6}), (random, {1: 0.7}),
                       (unpaired, {1: 0.9})])
    rows = cmp.versus_random_init(summary, table, ["accuracy"], BOOTSTRAP)
    assert [(r["model"], r["weights"]) for r in rows] == [("vgg16", "imagenet"), ("vgg16", "hed")]
    assert [r["difference"] for r in rows] == pytest.approx([0.1, -0.1])
    assert {r["family"] for r in rows} == {"pretraining"} and {r["family_size"] for r in rows} == {2}


def test_largest_family_counts_the_comparisons_whose_reference_ran():
    at_one = [BASE, config("vgg16", "frozen"), config("vgg16", "full"), config("vgg16", "frozen", "none")]
    at_half = [config("vgg16", s, fraction=0.5) for s in ("frozen", "partial", "full")]  # no baseline there
    assert cmp.largest_family(at_one) == 3  # three against the baseline; one against random init
    assert cmp.largest_family(at_half) == 0
    assert cmp.largest_family([BASE]) == 0


def test_with_holm_adjusts_within_dataset_fraction_and_metric():
    cases = (("frozen", "a", 0.01), ("full", "a", 0.04), ("full", "b", 0.04))
    rows = [{**config("vgg16", s, dataset=d), "metric": "accuracy", "n_pairs": 3, "difference": 0.1, "low": 0.0,
             "high": 0.2, "p_value": p} for s, d, p in cases]
    adjusted = cmp.with_holm(rows, "baseline")
    assert [r["p_holm"] for r in adjusted] == pytest.approx([0.02, 0.04, 0.04])
    assert [r["family_size"] for r in adjusted] == [2, 2, 1]
    assert list(adjusted[0]) == cmp.COMPARISON_COLUMNS
    assert [r["alpha"] for r in adjusted] == pytest.approx([0.05 / 2, 0.05, 0.05])  # Holm's level of each rank
