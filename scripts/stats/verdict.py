"""What the study concludes per dataset, in numbers and in sentences.

* :func:`chosen_config` and :func:`chosen_verdict`: the configuration chosen on
  *validation* (mean over seeds of the selection metric, at the largest training
  fraction), its test metrics and its comparisons with the baseline, the one in the
  selection metric prespecified. The test set never chooses.
* :func:`learning_curve` and :func:`learning_statements`: per pretrained configuration,
  at which training-set sizes it beats the baseline (:data:`BEATS_RULE`), is worse, or
  shows no significant difference, as a table and as one sentence each.
* :func:`shortcut_verdict`: the configurations where too many test images have a Grad-CAM
  map that puts more mass outside the lung box than a uniform map does.
* :func:`validation_drop`: whether the chosen configuration loses more from validation to
  test than choosing the best on validation explains (:data:`OVERESTIMATE_RULE`). It only
  qualifies the choice; the choice stays the validation's.
"""

from __future__ import annotations

import functools
import json

import numpy as np

from scripts.plan.grid import PRETRAINED_STRATEGIES
from scripts.stats import shortcut
from scripts.stats.comparisons import SIGNIFICANCE, is_baseline
from scripts.stats.run_tables import CONFIG, config_key

TOO_FEW_SEEDS = 3  # fewer seeds paired with the baseline than this: no claim either way
BEATS_RULE = ("beats = a positive difference in the test selection metric against the scratch CNN baseline "
              f"at the same training fraction, over at least {TOO_FEW_SEEDS} seeds paired with it, with p < "
              f"{SIGNIFICANCE} after adjustment within its family (paired t over the shared seeds and the test "
              "images: the seeds' variance plus the test set's shared part, seeds - 1 degrees of freedom)")
LEARNING_CURVE_COLUMNS = [*CONFIG, "n_train", "n_seeds", "metric", "value", "seed_low", "seed_high", "test_low",
                          "test_high", "n_pairs", "difference", "low", "high", "p_holm", "beats", "family", "outcome"]
BEATS, WORSE, NO_DIFFERENCE, NO_CLAIM = "beats", "worse", "no significant difference", "too few seeds"


# --- which configuration --------------------------------------------------------------------------

def chosen_verdict(name: str, summary: list[dict], candidates: list[dict], comparisons: list[dict],
                   metrics: list[str], selection: str, classes: list[str], positive_class: str | None, n_test: int,
                   finished: int) -> dict:
    """The configuration with the best mean validation ``selection`` metric (the first of
    ``candidates``, :func:`ranked_candidates`), with its test metrics and comparisons."""
    largest = max(row["fraction"] for row in summary)
    verdict = {"dataset": name, "finished": finished, "classes": classes, "positive_class": positive_class,
               "n_test": n_test, "metrics": metrics, "selection_metric": selection, "fraction": largest,
               "n_candidates": len(candidates), "chosen": None, "min_seeds": TOO_FEW_SEEDS}
    chosen = chosen_config(candidates)
    if chosen is None:
        return verdict
    versus = [c for c in comparisons if config_key(c) == config_key(chosen)]
    prespecified = next((c for c in versus if c["family"] == "prespecified"), None)
    verdict.update(
        chosen=chosen,
        per_class=json.loads(chosen["per_class"]),
        is_baseline=is_baseline(chosen),
        versus=versus,
        prespecified=prespecified,
        claim=outcome(prespecified) if prespecified else None,
        too_few_seeds=chosen["n_seeds"] < TOO_FEW_SEEDS,
    )
    return verdict


def ranked_candidates(summary: list[dict], selection: str) -> list[dict]:
    """The summary rows at the largest training fraction with a validation ``selection``
    metric, best mean first (ties: fewer trainable parameters first)."""
    if not summary:
        return []
    largest = max(row["fraction"] for row in summary)
    return sorted((row for row in summary if row["fraction"] == largest and not np.isnan(row[f"val_{selection}"])),
                  key=lambda row: (-row[f"val_{selection}"], row["trainable_params"]))


def chosen_config(candidates: list[dict]) -> dict | None:
    """The first of the ranked ``candidates`` (:func:`ranked_candidates`); None without one."""
    return candidates[0] if candidates else None


# --- how much labelled data -----------------------------------------------------------------------

def learning_curve(summary: list[dict], comparisons: list[dict], metric: str) -> list[dict]:
    """Per configuration and fraction: mean training images, the test ``metric`` with its
    intervals, and its comparison with the baseline at that fraction (``beats``: see
    :data:`BEATS_RULE`; None where there is no comparison)."""
    versus = {(*config_key(c), c["metric"]): c for c in comparisons}
    rows = []
    for config in summary:
        row = {**{key: config[key] for key in CONFIG}, "n_train": config["n_train"], "n_seeds": config["n_seeds"],
               "metric": metric, "value": config[metric]}
        for bound in ("seed_low", "seed_high", "test_low", "test_high"):
            row[bound] = config[f"{metric}_{bound}"]
        compared = versus.get((*config_key(config), metric))
        for column in ("n_pairs", "difference", "low", "high", "p_holm"):
            row[column] = compared[column] if compared else np.nan
        row["beats"] = beats(compared) if compared else None
        row["family"] = compared["family"] if compared else None
        row["outcome"] = outcome(compared) if compared else None
        rows.append(row)
    return sorted(rows, key=lambda r: (*config_key(r)[:4], r["fraction"]))


def beats(compared: dict) -> bool:
    """:data:`BEATS_RULE` for one comparison with the baseline."""
    return outcome(compared) == BEATS


def outcome(compared: dict) -> str:
    """What one comparison with the baseline shows: :data:`BEATS`, :data:`WORSE` (a negative
    difference, significant as in :data:`BEATS_RULE`), :data:`NO_DIFFERENCE`, or :data:`NO_CLAIM`
    (fewer than :data:`TOO_FEW_SEEDS` seeds paired). A p-value at or above the level is not
    evidence that the two are equal, so no outcome says "never beats" or "stops beating"."""
    if compared["n_pairs"] < TOO_FEW_SEEDS:
        return NO_CLAIM
    if compared["p_holm"] < SIGNIFICANCE:
        if compared["difference"] > 0:
            return BEATS
        if compared["difference"] < 0:
            return WORSE
    return NO_DIFFERENCE


def learning_statements(curve: list[dict]) -> list[dict]:
    """Per pretrained configuration (model × strategy × pretraining): at which training-set
    sizes it beats the baseline, is worse, shows no significant difference, or has too few
    seeds for a claim (:func:`outcome`)."""
    configs = {}
    for row in curve:
        if row["strategy"] in PRETRAINED_STRATEGIES:
            configs.setdefault((row["model"], row["strategy"], row["weights"]), []).append(row)
    statements = []
    for (model, strategy, weights), points in configs.items():
        points = sorted(points, key=lambda p: p["fraction"])
        compared = [p for p in points if p["beats"] is not None]
        outcomes = [outcome(p) for p in compared]
        statements.append({"model": model, "strategy": strategy, "weights": weights,
                           "beats_at": [p["fraction"] for p, o in zip(compared, outcomes, strict=True) if o == BEATS],
                           "not_at": [p["fraction"] for p, o in zip(compared, outcomes, strict=True) if o != BEATS],
                           "worse_at": [p["fraction"] for p, o in zip(compared, outcomes, strict=True) if o == WORSE],
                           "text": statement_text(points, compared),
                           "too_few_seeds": NO_CLAIM in outcomes})
    return statements


STATEMENT_PARTS = {
    BEATS: "beats the scratch CNN baseline at {sizes} training images",
    WORSE: "is worse than the scratch CNN baseline at {sizes} training images",
    NO_DIFFERENCE: "shows no significant difference from the scratch CNN baseline at {sizes} training images "
                   "(which does not show that they are equal)",
    NO_CLAIM: f"has fewer than {TOO_FEW_SEEDS} seeds paired with the scratch CNN baseline at {{sizes}} training "
              "images: no claim either way",
}


def statement_text(points: list[dict], compared: list[dict]) -> str:
    """One sentence, a clause per outcome in :data:`STATEMENT_PARTS` order; sizes are mean
    training images (share of the training split)."""
    if not compared:
        return f"not compared: no scratch CNN baseline ran at its training-set sizes ({_sizes(points)})"
    by_outcome = {}
    for point in compared:
        by_outcome.setdefault(outcome(point), []).append(point)
    return "; ".join(text.format(sizes=_sizes(by_outcome[kind])) for kind, text in STATEMENT_PARTS.items()
                     if kind in by_outcome)


def _sizes(points: list[dict]) -> str:
    return ", ".join(f"{p['n_train']:.0f} ({p['fraction']:.0%})" for p in points)


# --- is it looking at the lungs -------------------------------------------------------------------

def shortcut_verdict(summary: list[dict], evaluation: dict, chosen: dict | None) -> dict:
    """The configurations whose share of test images with a map that puts more mass outside
    the lung box than a uniform map does (mean over seeds) exceeds
    ``evaluation.shortcut_image_share``; one without any scored map (NaN) is neither flagged
    nor cleared."""
    threshold, box = evaluation["shortcut_image_share"], evaluation["lung_box"]
    flagged = [{**{key: row[key] for key in CONFIG}, "score": row["shortcut_score"],
                "above_uniform": row["shortcut_above_uniform"], "cells": row["cam_cells"]}
               for row in summary if row["shortcut_above_uniform"] > threshold]
    return {"threshold": threshold, "box": box, "uniform": shortcut.uniform_score(box), "flagged": flagged,
            "chosen_flagged": bool(chosen) and any(config_key(f) == config_key(chosen) for f in flagged)}


# --- does validation predict test -----------------------------------------------------------------

FALSE_ALARM = 0.05  # the share of studies without a shift in which validation_drop fires
OVERESTIMATE_RULE = ("the chosen configuration's drop from validation to test (mean over seeds of validation minus "
                     "test selection metric) exceeds the median drop of the other configurations at its training "
                     "fraction by more than choosing the best of them on validation explains in "
                     f"{1 - FALSE_ALARM:.0%} of studies without a shift: the {1 - FALSE_ALARM:.0%} quantile of the "
                     "best of K equal configurations' excess drop, with every configuration's mean drop varying by "
                     "the pooled standard deviation over seeds of the per-seed drops over the square root of the "
                     "seeds, all of it taken as validation noise (the most that choosing can explain)")
OVERESTIMATE_TEXT = ("validation overestimates this configuration by more than choosing the best on validation "
                     "explains; the test set may differ from the validation data")


@functools.lru_cache(maxsize=64)
def selection_quantile(n_configs: int, level: float = 1 - FALSE_ALARM) -> float:
    """The ``level`` quantile, in standard deviations of one configuration's mean drop, of how
    much more the validation-best of ``n_configs`` equal configurations drops than the median
    of the others, when all of the drop's noise is on the validation side (then the best on
    validation is the luckiest there, and its drop the largest: the most selection explains).
    A seeded Monte Carlo of 20,000 studies, fixed for a given ``n_configs``."""
    validation_noise = np.random.default_rng(n_configs).standard_normal((20_000, n_configs))
    ordered = np.sort(validation_noise, axis=1)
    best, others = ordered[:, -1], ordered[:, :-1]
    return float(np.quantile(best - np.median(others, axis=1), level))


def validation_drop(summary: list[dict], chosen: dict | None) -> dict | None:
    """:data:`OVERESTIMATE_RULE` for the chosen configuration, from the summary's
    ``val_test_change`` (mean over seeds of test minus validation) and its standard
    deviation over seeds. ``overestimated`` is None where the rule cannot be applied: no
    other configuration, or no configuration with two seeds (no spread to compare with).
    ``selection_margin``: the excess drop that choosing the best explains at the rule's level."""
    if chosen is None:
        return None
    peers = [row for row in summary if row["fraction"] == chosen["fraction"]]
    others = [-row["val_test_change"] for row in peers
              if config_key(row) != config_key(chosen) and not np.isnan(row["val_test_change"])]
    spread = [(row["n_seeds"] - 1, row["val_test_change_sd"]) for row in peers
              if row["n_seeds"] > 1 and not np.isnan(row["val_test_change_sd"])]
    drop = -chosen["val_test_change"]
    # The pooled standard deviation (degrees-of-freedom weighted variances) of a one-way layout, by hand:
    # scipy and statsmodels offer it only inside their ANOVA and t-test routines.
    pooled = float(np.sqrt(sum(df * sd ** 2 for df, sd in spread) / sum(df for df, _ in spread))) if spread else np.nan
    median = float(np.median(others)) if others else np.nan
    judged = not (np.isnan(drop) or np.isnan(median) or np.isnan(pooled))
    margin = selection_quantile(len(others) + 1) * pooled / np.sqrt(chosen["n_seeds"]) if judged else np.nan
    return {"rule": OVERESTIMATE_RULE, "text": OVERESTIMATE_TEXT, "drop": drop, "median_other_drop": median,
            "pooled_sd": pooled, "n_others": len(others), "selection_margin": float(margin),
            "overestimated": bool(drop > 0 and drop - median > margin) if judged else None}
