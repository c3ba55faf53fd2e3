"""What the study concludes per dataset, in numbers and in sentences.

* :func:`chosen_verdict`: the configuration chosen on *validation* (mean over seeds of the
  selection metric, at the largest training fraction), its test metrics and its
  comparisons with the baseline. The test set never chooses.
* :func:`learning_curve` and :func:`learning_statements`: per pretrained configuration,
  at which training-set sizes it beats the baseline (:data:`BEATS_RULE`), as a table
  and as one sentence each.
* :func:`shortcut_verdict`: the configurations whose Grad-CAM mass lies mostly outside
  the lung box.
* :func:`validation_drop`: whether the chosen configuration loses much more from
  validation to test than the others (:data:`OVERESTIMATE_RULE`). It only qualifies the
  choice; the choice stays the validation's.
"""

from __future__ import annotations

import json

import numpy as np

from scripts import shortcut
from scripts.comparisons import is_baseline
from scripts.grid import PRETRAINED_STRATEGIES
from scripts.run_tables import CONFIG, config_key

SIGNIFICANCE = 0.05
BEATS_RULE = ("beats = a positive difference in the test selection metric against the scratch CNN baseline "
              "at the same training fraction (paired bootstrap over the test images, shared seeds) with a "
              f"Holm-adjusted p < {SIGNIFICANCE}")
LEARNING_CURVE_COLUMNS = [*CONFIG, "n_train", "n_seeds", "metric", "value", "seed_low", "seed_high", "test_low",
                          "test_high", "n_pairs", "difference", "low", "high", "p_holm", "beats"]
TOO_FEW_SEEDS = 3  # fewer seeds (or seed pairs) than this: too few to conclude


# --- which configuration --------------------------------------------------------------------------

def chosen_verdict(name: str, summary: list[dict], comparisons: list[dict], metrics: list[str], selection: str,
                   classes: list[str], positive_class: str | None, n_test: int, finished: int) -> dict:
    """The configuration with the best mean validation ``selection`` metric (at the
    largest training fraction; ties go to fewer trainable parameters), with its test
    metrics and comparisons."""
    largest = max(row["fraction"] for row in summary)
    candidates = [row for row in summary if row["fraction"] == largest and not np.isnan(row[f"val_{selection}"])]
    verdict = {"dataset": name, "finished": finished, "classes": classes, "positive_class": positive_class,
               "n_test": n_test, "metrics": metrics, "selection_metric": selection, "fraction": largest,
               "n_candidates": len(candidates), "chosen": None}
    if not candidates:
        return verdict
    chosen = max(candidates, key=lambda row: (row[f"val_{selection}"], -row["trainable_params"]))
    verdict.update(
        chosen=chosen,
        per_class=json.loads(chosen["per_class"]),
        is_baseline=is_baseline(chosen),
        versus=[c for c in comparisons if config_key(c) == config_key(chosen)],
        too_few_seeds=chosen["n_seeds"] < TOO_FEW_SEEDS,
        n_comparisons=len({(c["model"], c["strategy"], c["weights"]) for c in comparisons
                           if c["fraction"] == largest}),
    )
    return verdict


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
        rows.append(row)
    return sorted(rows, key=lambda r: (*config_key(r)[:4], r["fraction"]))


def beats(compared: dict) -> bool:
    """:data:`BEATS_RULE` for one comparison with the baseline."""
    return bool(compared["difference"] > 0 and compared["p_holm"] < SIGNIFICANCE)


def learning_statements(curve: list[dict]) -> list[dict]:
    """Per pretrained configuration (model × strategy × pretraining): at which training-set
    sizes it beats the baseline, where it stops, or that it never does."""
    configs = {}
    for row in curve:
        if row["strategy"] in PRETRAINED_STRATEGIES:
            configs.setdefault((row["model"], row["strategy"], row["weights"]), []).append(row)
    statements = []
    for (model, strategy, weights), points in configs.items():
        points = sorted(points, key=lambda p: p["fraction"])
        compared = [p for p in points if p["beats"] is not None]
        wins = [p for p in compared if p["beats"]]
        losses = [p for p in compared if not p["beats"]]
        statements.append({"model": model, "strategy": strategy, "weights": weights,
                           "beats_at": [p["fraction"] for p in wins], "not_at": [p["fraction"] for p in losses],
                           "text": statement_text(points, compared, wins, losses),
                           "too_few_seeds": any(p["n_pairs"] < TOO_FEW_SEEDS for p in compared)})
    return statements


def statement_text(points: list[dict], compared: list[dict], wins: list[dict], losses: list[dict]) -> str:
    """One sentence; sizes are mean training images (share of the training split)."""
    if not compared:
        return f"not compared: no scratch CNN baseline ran at its training-set sizes ({_sizes(points)})"
    if not wins:
        return f"never beats the scratch CNN baseline at the sizes tested: {_sizes(compared)} training images"
    if not losses:
        return f"beats the scratch CNN baseline at every size tested: {_sizes(compared)} training images"
    where = f"beats the scratch CNN baseline at {_sizes(wins)} training images, not at {_sizes(losses)}"
    if compared[:len(wins)] == wins:  # wins at the smallest sizes only: the advantage stops
        return f"{where}: it stops beating it from {losses[0]['n_train']:.0f} training images on"
    if compared[-len(wins):] == wins:
        return f"{where}: it beats it only from {wins[0]['n_train']:.0f} training images on"
    return where


def _sizes(points: list[dict]) -> str:
    return ", ".join(f"{p['n_train']:.0f} ({p['fraction']:.0%})" for p in points)


# --- is it looking at the lungs -------------------------------------------------------------------

def shortcut_verdict(summary: list[dict], evaluation: dict, chosen: dict | None) -> dict:
    """The configurations whose mean shortcut score exceeds the threshold."""
    threshold, box = evaluation["shortcut_threshold"], evaluation["lung_box"]
    flagged = [{**{key: row[key] for key in CONFIG}, "score": row["shortcut_score"], "cells": row["cam_cells"]}
               for row in summary if row["shortcut_score"] > threshold]
    return {"threshold": threshold, "box": box, "uniform": shortcut.uniform_score(box), "flagged": flagged,
            "chosen_flagged": bool(chosen) and any(config_key(f) == config_key(chosen) for f in flagged)}


# --- does validation predict test -----------------------------------------------------------------

OVERESTIMATE_RULE = ("the chosen configuration's drop from validation to test (mean over seeds of validation minus "
                     "test selection metric) exceeds the median drop of the other configurations at its training "
                     "fraction by more than the pooled standard deviation over seeds of the per-seed drops")
OVERESTIMATE_TEXT = ("validation overestimates this configuration; the test set may differ from the training "
                     "distribution")


def validation_drop(summary: list[dict], chosen: dict | None) -> dict | None:
    """:data:`OVERESTIMATE_RULE` for the chosen configuration, from the summary's
    ``val_test_change`` (mean over seeds of test minus validation) and its standard
    deviation over seeds. ``overestimated`` is None where the rule cannot be applied: no
    other configuration, or no configuration with two seeds (no spread to compare with)."""
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
    return {"rule": OVERESTIMATE_RULE, "text": OVERESTIMATE_TEXT, "drop": drop, "median_other_drop": median,
            "pooled_sd": pooled, "n_others": len(others),
            "overestimated": bool(drop > 0 and drop - median > pooled) if judged else None}
