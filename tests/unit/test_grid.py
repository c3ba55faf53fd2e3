"""The study grid, its documented skips and the pretraining sources."""

import pytest

from scripts.grid import plan, weights_sources


def test_scratch_cnn_only_runs_from_scratch_and_skips_are_explained():
    runs, skipped = plan({"a": {}, "b": {}}, ["scratch_cnn", "vgg16"], ["scratch", "frozen"], ["imagenet"],
                         [1.0], [1, 2])
    assert len(runs) == 2 * 3 * 2  # (cnn×scratch + vgg×2) × datasets × seeds
    assert skipped == [{"model": "scratch_cnn", "strategy": "frozen",
                        "reason": "scratch_cnn has no pretrained backbone to freeze, probe or fine-tune; "
                                  "only 'scratch' applies"}]
    assert {(r["strategy"], r["weights"]) for r in runs} == {("scratch", "none"), ("frozen", "imagenet")}


def test_pretraining_sources_and_fractions_are_axes_of_the_pretrained_strategies_only():
    runs, _ = plan({"a": {}}, ["scratch_cnn", "vgg16"], ["scratch", "linear_probe"], ["imagenet", "none"],
                   [0.5, 1], [1])
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
    runs, skipped = plan({"a": {}}, ["scratch_cnn", "resnet50"], ["scratch", "partial"], ["none"], [1.0], [1],
                         exclude=[{"model": "resnet50", "strategy": "scratch"}])
    assert sorted((r["model"], r["strategy"]) for r in runs) == [("resnet50", "partial"), ("scratch_cnn", "scratch")]
    assert {"model": "resnet50", "strategy": "scratch", "reason": "excluded in the config (exclude)"} in skipped
    runs, _ = plan({"a": {}}, ["vgg16", "resnet50"], ["scratch", "frozen"], ["none"], [1.0], [1],
                   exclude=[{"strategy": "scratch"}])
    assert {r["strategy"] for r in runs} == {"frozen"}
