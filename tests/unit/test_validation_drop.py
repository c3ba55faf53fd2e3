"""The verdict's check that validation overestimates the chosen configuration, on
hand-built summaries: the rule, where it cannot apply, and that it never changes the choice."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import fake_plan, fake_run

from scripts.common.layout import RUN_FILES
from scripts.stats.aggregate import aggregate
from scripts.stats.verdict import OVERESTIMATE_TEXT, selection_quantile, validation_drop


def row(model: str, change: float, sd: float = 0.02, n_seeds: int = 3, fraction: float = 1.0) -> dict:
    """A summary row: ``change`` = mean test minus validation selection metric."""
    return {"dataset": "tiny", "model": model, "strategy": "frozen", "weights": "imagenet", "fraction": fraction,
            "n_seeds": n_seeds, "val_test_change": change, "val_test_change_sd": sd}


OTHERS = [row("a", -0.01), row("b", -0.03), row("c", 0.01)]  # median drop 0.01; pooled sd 0.02
# choosing the best of 4 on validation explains up to 2.69 standard deviations of a mean drop
# over 3 seeds (0.02 / sqrt(3)) more than the others' median: 0.031
MARGIN = 2.689 * 0.02 / np.sqrt(3)


@pytest.mark.parametrize("change, overestimated", [
    (-0.10, True),  # drop 0.10: 0.09 more than the median drop, above what choosing explains
    (-0.01 - MARGIN - 0.001, True),  # just above
    (-0.01 - MARGIN + 0.001, False),  # just below: choosing the best explains it
    (-0.029, False),  # 0.019 more: above the seeds' spread, which the old rule flagged
    (0.05, False),  # it gained on test
])
def test_the_chosen_drop_against_the_median_drop_of_the_others(change, overestimated):
    chosen = row("chosen", change)
    result = validation_drop([*OTHERS, chosen], chosen)
    assert result["overestimated"] is overestimated
    assert result["selection_margin"] == pytest.approx(MARGIN, abs=1e-3)
    assert result["median_other_drop"] == pytest.approx(0.01) and result["pooled_sd"] == pytest.approx(0.02)
    assert result["drop"] == pytest.approx(-change) and result["n_others"] == 3
    assert result["text"] == OVERESTIMATE_TEXT


def test_the_spread_is_pooled_by_degrees_of_freedom_and_other_fractions_do_not_count():
    chosen = row("chosen", -0.2, sd=0.0, n_seeds=2)
    others = [row("a", 0.0, sd=0.1, n_seeds=4), row("b", 0.0, sd=0.0, n_seeds=1),  # one seed: no spread
              row("c", -0.5, sd=1.0, fraction=0.5)]  # another fraction: neither peer nor spread
    result = validation_drop([chosen, *others], chosen)
    assert result["pooled_sd"] == pytest.approx(np.sqrt(3 * 0.1 ** 2 / (3 + 1)))
    assert result["median_other_drop"] == 0.0 and result["n_others"] == 2 and result["overestimated"]
    assert result["selection_margin"] == pytest.approx(selection_quantile(3) * result["pooled_sd"] / np.sqrt(2))


def test_the_selection_quantile_grows_with_the_configurations_chosen_among():
    """The validation-best of K equal configurations drops more than the others' median by
    up to this many standard deviations in 95% of studies. Two: |Z1 - Z2|, 1.96 sqrt(2)."""
    assert selection_quantile(2) == pytest.approx(1.96 * np.sqrt(2), abs=0.05)
    assert 2.5 < selection_quantile(11) < 3.0
    assert selection_quantile(11) == selection_quantile.__wrapped__(11)  # seeded: the same every time


CLASSES = ["NORMAL", "PNEUMONIA"]
LABELS = np.array([0] * 10 + [1] * 10)


def right(share: float, seed: int) -> np.ndarray:
    """Probabilities with the first ``share`` of each class right (a seed-dependent one more or less)."""
    probabilities = np.full((len(LABELS), 2), 0.2)
    for i, label in enumerate(LABELS):
        correct = (i % 10) < round(10 * share) + (seed % 2)
        probabilities[i, label if correct else 1 - label] = 0.8
    return probabilities


def test_the_aggregate_flags_the_validation_choice_that_drops_and_keeps_it(tmp_path):
    """vgg16 frozen is best on validation (0.95) and falls to about 0.6 on test; the
    scratch CNN and vgg16 full hold their validation level (0.8). The choice stays vgg16 frozen."""
    runs = [(model, strategy, weights, seed) for model, strategy, weights in
            (("scratch_cnn", "scratch", "none"), ("vgg16", "frozen", "imagenet"), ("vgg16", "full", "imagenet"))
            for seed in (1, 2, 3)]
    plan = fake_plan(tmp_path, CLASSES, runs, resamples=100, positive_class="PNEUMONIA")
    level = {"scratch": (0.8, 0.8), "frozen": (0.6, 0.95), "full": (0.8, 0.85)}  # (test share right, val F1)
    for run in plan["runs"]:
        test, val = level[run["strategy"]]
        fake_run(run, RUN_FILES, CLASSES, LABELS, right(test, run["seed"]), val_f1=val + run["seed"] / 1000)
    tables = aggregate(plan)
    verdict = tables["verdict"]["datasets"]["tiny"]
    assert (verdict["chosen"]["model"], verdict["chosen"]["strategy"]) == ("vgg16", "frozen")
    assert verdict["validation_drop"]["overestimated"] is True
    summary = tables["summary"].set_index("strategy")
    expected = summary["f1_macro"] - summary["val_f1_macro"]
    assert summary["val_test_change"].to_numpy() == pytest.approx(expected.to_numpy())
