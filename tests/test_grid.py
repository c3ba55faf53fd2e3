"""The study grid and its documented skips."""

from scripts.grid import phases, plan


def test_scratch_cnn_only_runs_from_scratch_and_skips_are_explained():
    runs, skipped = plan({"a": {}, "b": {}}, ["scratch_cnn", "vgg16"], ["scratch", "frozen"], [1, 2])
    assert len(runs) == 2 * 3 * 2  # (cnn×scratch + vgg×2) × datasets × seeds
    assert skipped == [{"model": "scratch_cnn", "strategy": "frozen",
                        "reason": "scratch_cnn has no pretrained backbone to freeze or fine-tune; "
                                  "only 'scratch' applies"}]


def test_phases_follow_the_keras_recipe():
    assert [p.trainable for p in phases("full")] == ["head", "backbone"]
    assert [p.learning_rate_key for p in phases("partial")] == ["learning_rate", "finetune_learning_rate"]
    assert [p.trainable for p in phases("scratch")] == ["all"]
