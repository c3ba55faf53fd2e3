"""The study grid, its documented skips and the pretraining sources."""

import pytest

from scripts.plan.grid import pack_minutes, pack_seeds, packs, plan, weights_sources


def test_scratch_cnn_only_runs_from_scratch_and_skips_are_explained():
    runs, skipped = plan({"a": {}, "b": {}}, ["scratch_cnn", "vgg16"], ["scratch", "frozen"], {"imagenet": "imagenet"},
                         [1.0], [1, 2])
    assert len(runs) == 2 * 3 * 2  # (cnn×scratch + vgg×2) × datasets × seeds
    assert skipped == [{"model": "scratch_cnn", "strategy": "frozen",
                        "reason": "scratch_cnn has no pretrained backbone to freeze, probe or fine-tune; "
                                  "only 'scratch' applies"}]
    assert {(r["strategy"], r["weights"]) for r in runs} == {("scratch", "none"), ("frozen", "imagenet")}


def test_pretraining_sources_and_fractions_are_axes_of_the_pretrained_strategies_only():
    runs, _ = plan({"a": {}}, ["scratch_cnn", "vgg16"], ["scratch", "linear_probe"],
                   {"imagenet": "imagenet", "none": "none"}, [0.5, 1], [1])
    keys = sorted((r["model"], r["strategy"], r["weights"], r["fraction"]) for r in runs)
    assert keys == [("scratch_cnn", "scratch", "none", "0.5"), ("scratch_cnn", "scratch", "none", "1.0"),
                    ("vgg16", "linear_probe", "imagenet", "0.5"), ("vgg16", "linear_probe", "imagenet", "1.0"),
                    ("vgg16", "linear_probe", "none", "0.5"), ("vgg16", "linear_probe", "none", "1.0"),
                    ("vgg16", "scratch", "none", "0.5"), ("vgg16", "scratch", "none", "1.0")]


def test_weights_sources_are_named():
    assert weights_sources("imagenet") == [{"name": "imagenet", "spec": "imagenet"}]
    assert weights_sources({"vgg16": "/w.h5"}) == [{"name": "custom", "spec": {"vgg16": "/w.h5"}}]
    listed = weights_sources(["none", {"name": "hed", "source": {"vgg16": {"path": "/w.h5"}}}])
    assert [s["name"] for s in listed] == ["none", "hed"]
    with pytest.raises(ValueError, match="distinct names"):
        weights_sources([{"name": "a", "source": "imagenet"}, {"name": "a", "source": "none"}])
    with pytest.raises(ValueError, match="reserved"):
        weights_sources([{"name": "none", "source": "imagenet"}])


def test_excluded_combinations_are_skipped_with_their_reason():
    runs, skipped = plan({"a": {}}, ["scratch_cnn", "resnet50"], ["scratch", "partial"], {"none": "none"}, [1.0], [1],
                         exclude=[{"model": "resnet50", "strategy": "scratch"}])
    assert sorted((r["model"], r["strategy"]) for r in runs) == [("resnet50", "partial"), ("scratch_cnn", "scratch")]
    assert {"model": "resnet50", "strategy": "scratch", "reason": "excluded in the config (exclude)"} in skipped
    runs, _ = plan({"a": {}}, ["vgg16", "resnet50"], ["scratch", "frozen"], {"none": "none"}, [1.0], [1],
                   exclude=[{"strategy": "scratch"}])
    assert {r["strategy"] for r in runs} == {"frozen"}


def test_packs_hold_consecutive_seeds_of_one_configuration():
    runs, _ = plan({"a": {}}, ["scratch_cnn", "vgg16"], ["scratch"], {"none": "none"}, [0.5, 1], [3, 1, 2, 7, 5])
    grouped = packs(runs, 2)
    # 4 configurations (2 models × 2 fractions) × ceil(5 seeds / 2) = 12 packs
    assert len(grouped) == 12 and sum(len(p["members"]) for p in grouped) == len(runs)
    first = [p for p in grouped if p["model"] == "vgg16" and p["fraction"] == "0.5"]
    assert [(p["seeds"], p["members"]) for p in first] == [("1-2", [1, 2]), ("3-5", [3, 5]), ("7-7", [7])]
    assert {k: first[0][k] for k in ("dataset", "strategy", "weights")} == {
        "dataset": "a", "strategy": "scratch", "weights": "none"}
    assert len(packs(runs, 1)) == len(runs) and len(packs(runs, 64)) == 4


def test_appending_seeds_keeps_the_full_packs():
    before, _ = plan({"a": {}}, ["scratch_cnn"], ["scratch"], {"none": "none"}, [1], [1, 2, 3, 4])
    after, _ = plan({"a": {}}, ["scratch_cnn"], ["scratch"], {"none": "none"}, [1], [1, 2, 3, 4, 5, 6])
    assert [p["seeds"] for p in packs(before, 4)] == ["1-4"]
    assert [p["seeds"] for p in packs(after, 4)] == ["1-4", "5-6"]


def test_a_pack_name_gives_back_its_seeds_or_a_clear_error():
    assert pack_seeds("3-7", [1, 2, 3, 5, 7, 9]) == [3, 5, 7]
    with pytest.raises(ValueError, match="pack 4-7: seeds 4 and 7 are not both planned"):
        pack_seeds("4-7", [1, 2, 3, 5, 7])


def test_a_pack_asks_for_its_runs_times_the_attempt_and_never_more_than_the_site_allows():
    # 1 minute for the job's start + 8 runs × 12.5 minutes, times the attempt
    assert [pack_minutes(12.5, 8, attempt, None) for attempt in (1, 2, 3)] == [101, 202, 303]
    assert [pack_minutes(12.5, 8, attempt, 240) for attempt in (1, 2, 3)] == [101, 202, 240]
    assert pack_minutes(0.2, 1, 1, None) == 2
