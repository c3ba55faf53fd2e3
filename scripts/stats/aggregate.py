"""The study's statistics, from the plan and the finished runs' files.

* ``runs``: every planned run, its status, test and validation metrics, cost and provenance;
* ``summary``: per configuration (dataset × model × strategy × pretraining × fraction) the
  mean over seeds of each metric with three intervals: over seeds (t-interval: training
  variation), over test images (stratified bootstrap of the test set: test-sample
  variation given the trained models) and over both (the seeds' variance plus the test set's
  shared part, a t over the seeds: :func:`scripts.stats.stats.seeds_and_images`);
* ``comparisons``: every configuration against the scratch baseline on the same seeds and
  test images (paired; t over seeds and test images); the validation-chosen configuration's
  comparison in the selection metric on its own, the others Holm-adjusted within each
  dataset × fraction × metric (:data:`scripts.stats.comparisons.FAMILIES`);
* ``verdict``: per dataset the configuration chosen on *validation* (mean over seeds of
  the selection metric), its test metrics and comparisons. The test set never chooses.

The questions a transfer-learning study is judged on:

* ``learning_curve``: how much labelled data: per configuration and training fraction the
  mean number of training images, the test selection metric with its intervals and the
  comparison with the baseline at that fraction; the verdict states per pretrained
  configuration at which sizes it beats the baseline (:data:`scripts.stats.verdict.BEATS_RULE`);
* ``external``: does it generalise: per configuration the metrics on each external test
  set (class-mapped), mean over seeds with seed and test-image intervals, beside the same
  metrics on the internal test set mapped by the same class map (like-for-like gap);
* calibration (``runs`` and ``summary``): top-label ECE, the multi-class Brier score,
  optionally after temperature scaling fitted on the run's validation predictions;
  reliability bins per configuration (:mod:`scripts.stats.calibration`);
* shortcuts (``runs``, ``summary``, verdict): the share of Grad-CAM mass outside the
  central lung box (:mod:`scripts.stats.shortcut`), flagged above a threshold;
* ``weights_comparison``: each pretraining source against random init (``none``) for the same
  backbone, strategy and fraction (paired, Holm).

This module reads each dataset's runs and puts the tables together; reading a run's
files is :mod:`scripts.stats.run_tables`, the comparisons :mod:`scripts.stats.comparisons`, the
conclusions and their sentences :mod:`scripts.stats.verdict`, what to deploy
:mod:`scripts.stats.deployment`, the formulas :mod:`scripts.stats.stats`. The report only
renders these tables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scripts.common import fsutil
from scripts.common.layout import RUN_FILES
from scripts.data.external import collapse, collapse_labels, external_classes
from scripts.plan.config import confirmation_seeds
from scripts.stats import deployment
from scripts.stats import stats as st
from scripts.stats.calibration import CALIBRATION, calibration_test_intervals, reliability, run_calibration
from scripts.stats.comparisons import (
    COMPARISON_COLUMNS,
    FAMILIES,
    SIGNIFICANCE,
    Resampled,
    is_baseline,
    largest_family,
    versus_baseline,
    versus_random_init,
)
from scripts.stats.evaluation import positive_index
from scripts.stats.run_tables import (
    CONFIG,
    COSTS,
    config_key,
    csv_boolean,
    read_predictions,
    read_run,
    read_shortcut_score,
    run_row,
    software,
    test_units,
)
from scripts.stats.verdict import (
    BEATS_RULE,
    LEARNING_CURVE_COLUMNS,
    TOO_FEW_SEEDS,
    chosen_config,
    chosen_verdict,
    learning_curve,
    learning_statements,
    ranked_candidates,
    shortcut_verdict,
    validation_drop,
)

# run_tables.read_shortcut_score
SHORTCUT = ["shortcut_score", "shortcut_above_uniform", "shortcut_no_map"]
PER_RUN = [*CALIBRATION, *SHORTCUT]  # computed here per run, summarised per configuration
# The range of each value summarised over seeds, to which its seed interval is clipped
# (stats.bounded_t_interval); a validation metric ("val_" + metric) has its metric's range.
VALUE_RANGES = {**{metric: (0.0, 1.0) for metric in st.METRICS}, "ece": (0.0, 1.0), "ece_scaled": (0.0, 1.0),
                "brier": (0.0, 2.0), "brier_scaled": (0.0, 2.0), "temperature": st.TEMPERATURE_BOUNDS,
                "calibration_slope": (-np.inf, np.inf), "calibration_intercept": (-np.inf, np.inf),
                **{name: (0.0, 1.0) for name in SHORTCUT}}
EXTERNAL_CONFIG = [*CONFIG, "external", "n_seeds", "n_images"]
INTERNAL_MAPPED = "internal_mapped_"  # prefix of the internal metrics on the external test's mapped task


def aggregate(plan: dict) -> dict:
    """The study's tables (DataFrames) ``runs``, ``summary``, ``comparisons``,
    ``learning_curve``, ``external``, ``weights_comparison``, those of
    :data:`scripts.report.deployment.DECISION_TABLES`, and the ``verdict`` (dict).

    The datasets are those the plan trains on (``plan["datasets"]``); test-only
    datasets appear in the ``external`` table of the datasets that name them.
    """
    files = {i: read_run(run, RUN_FILES) for i, run in enumerate(plan["runs"])}
    runs = pd.DataFrame([run_row(run, files[i]) for i, run in enumerate(plan["runs"])])
    parts = {name: _dataset_tables(name, plan, runs, files) for name in plan["datasets"]}

    def joined(table: str) -> list[dict]:
        return [row for part in parts.values() for row in part[table]]

    per_run = pd.DataFrame.from_dict({i: v for part in parts.values() for i, v in part["per_run"].items()},
                                     orient="index", columns=[*PER_RUN, "cam_cells", "cam_informative"])
    evaluation = plan["config"]["evaluation"]
    return {
        "runs": runs.join(per_run) if len(runs) else runs,
        "summary": pd.DataFrame(joined("summary")),
        "comparisons": pd.DataFrame(joined("comparisons"), columns=COMPARISON_COLUMNS),
        "learning_curve": pd.DataFrame(joined("learning_curve"), columns=LEARNING_CURVE_COLUMNS),
        "external": pd.DataFrame(joined("external"), columns=None if joined("external") else EXTERNAL_CONFIG),
        "weights_comparison": pd.DataFrame(joined("weights_comparison"), columns=COMPARISON_COLUMNS),
        **{table: pd.DataFrame(joined(table), columns=columns)
           for table, columns in deployment.DECISION_TABLES.items()},
        "verdict": {"datasets": {name: part["verdict"] for name, part in parts.items()},
                    "software": software(runs),
                    "bootstrap": {"resamples": evaluation["bootstrap_resamples"],
                                  "seed": evaluation["bootstrap_seed"], "families": FAMILIES,
                                  "significance": SIGNIFICANCE, "min_seeds": TOO_FEW_SEEDS},
                    "selection_metric": evaluation["selection_metric"],
                    "finished": int((runs["status"] == "ok").sum()) if len(runs) else 0,
                    "planned": len(runs)},
    }


def headline(binary: bool, n_classes: int) -> list[str]:
    """The metrics the verdict and the comparisons show, and that are bootstrapped. With two
    classes and no positive class, macro specificity equals macro recall (each class's
    specificity is the other's recall): only recall is shown."""
    if binary:
        return ["accuracy", "f1_macro", "auc", "sensitivity", "specificity"]
    return ["accuracy", "f1_macro", "auc", "recall_macro"] + (["specificity_macro"] if n_classes > 2 else [])


def study_metrics(binary: bool, n_classes: int, selection: str) -> list[str]:
    """The headline metrics and the selection metric (the learning curve's)."""
    metrics = headline(binary, n_classes)
    return metrics if selection in metrics else [*metrics, selection]


# --- per dataset -----------------------------------------------------------------------------------

def _dataset_tables(name: str, plan: dict, runs: pd.DataFrame, files: dict) -> dict:
    """One dataset's rows of every table, its per-run scores and its verdict."""
    config = plan["config"]
    evaluation = config["evaluation"]
    selection = evaluation["selection_metric"]
    done = runs[(runs["dataset"] == name) & (runs["status"] == "ok")]
    if done.empty:
        return _empty_dataset(name)
    classes = files[done.index[0]]["info"]["classes"]
    positive_class = config["datasets"][name].get("positive_class")
    positive = positive_index(classes, positive_class)
    metrics = study_metrics(len(classes) == 2 and positive is not None, len(classes), selection)
    predictions = {i: read_predictions(Path(plan["runs"][i]["dir"]) / RUN_FILES["predictions"], classes)
                   for i in done.index}
    per_run = {i: _run_scores(plan, i, predictions[i], classes, positive) for i in done.index}
    done = done.assign(**{key: [per_run[i][key] for i in done.index] for key in PER_RUN})
    finished = _Finished(done, files, predictions, per_run, classes)
    paths, y_true, _ = predictions[done.index[0]]
    family = largest_family(done[CONFIG].drop_duplicates().to_dict("records"))
    resamples = st.resamples_for_family(evaluation["bootstrap_resamples"], family, SIGNIFICANCE)
    groups = test_units(plan, name, paths)  # patients and near-copies, each drawn whole
    bootstrap = st.SharedBootstrap(y_true, resamples, evaluation["bootstrap_seed"], positive, groups)
    summary, resampled = _summary(plan, finished, metrics, selection, bootstrap)

    candidates = ranked_candidates(summary, selection)
    chosen = chosen_config(candidates)
    # With confirmation seeds the prespecified comparison is made on fresh seeds after this choice
    # (scripts/stats/confirmation.py); the chosen configuration's seeds here join the others' family.
    prespecified = ((config_key(chosen), selection)
                    if chosen and not is_baseline(chosen) and not confirmation_seeds(config) else None)
    meaningful = evaluation["meaningful_difference"]
    comparisons = versus_baseline(summary, resampled, metrics, bootstrap, prespecified, meaningful)
    curve = learning_curve(summary, comparisons, selection)
    external, external_info = _external(name, plan, done, selection, predictions, classes, groups)
    verdict = chosen_verdict(name, summary, candidates, comparisons, metrics, selection, classes, positive_class,
                             len(paths), len(done))
    decision = deployment.dataset_decision(name, plan, done, predictions, candidates, bootstrap, metrics, verdict)
    verdict["decision"] = decision.pop("info")
    verdict.update(learning_curve={"metric": selection, "rule": BEATS_RULE,
                                   "fractions": sorted({row["fraction"] for row in summary}),
                                   "statements": learning_statements(curve)},
                   shortcut=shortcut_verdict(summary, evaluation, verdict.get("chosen")),
                   external=external_info,
                   bootstrap={"resamples": resamples, "configured": evaluation["bootstrap_resamples"],
                              "largest_family": family,
                              "smallest_holm_p": family * st.smallest_p_value(resamples)},
                   calibration={"bins": st.ECE_BINS, "temperature_scaling": evaluation["temperature_scaling"],
                                "slope_outcome": _slope_outcome(classes, positive)})
    verdict["validation_drop"] = validation_drop(summary, verdict.get("chosen"))
    verdict["meaningful_difference"] = meaningful
    return {"summary": summary, "comparisons": comparisons, "learning_curve": curve, "external": external,
            **decision, "weights_comparison": versus_random_init(summary, resampled, metrics, bootstrap, meaningful),
            "per_run": {i: {k: v for k, v in scores.items() if k != "scaled"} for i, scores in per_run.items()},
            "verdict": verdict}


def _slope_outcome(classes: list[str], positive: int | None) -> str | None:
    """The class whose label is the calibration slope's outcome with two classes
    (:func:`scripts.stats.stats.calibration_slope_intercept`); None: top-label (more classes)."""
    if len(classes) != 2:
        return None
    return classes[st.positive_column(positive)]


@dataclass(frozen=True)
class _Finished:
    """One dataset's finished runs, each by its index in the plan's runs."""
    done: pd.DataFrame  # their rows of ``runs``, with the :data:`PER_RUN` scores
    files: dict  # train.json and metrics.json (read_run)
    predictions: dict  # test predictions as (paths, labels, probabilities)
    per_run: dict  # _run_scores
    classes: list[str]


def _empty_dataset(name: str) -> dict:
    verdict = {"dataset": name, "finished": 0, "chosen": None, "learning_curve": None, "shortcut": None,
               "external": {}, "validation_drop": None}
    return {"summary": [], "comparisons": [], "learning_curve": [], "external": [], "weights_comparison": [],
            "per_run": {}, "verdict": verdict, **deployment.empty_tables()}


def _run_scores(plan: dict, i: int, test: tuple, classes: list[str], positive: int | None) -> dict:
    """Calibration (temperature fitted on the run's validation predictions when
    configured) and shortcut score of run ``i``; ``scaled``: its rescaled test probabilities."""
    evaluation = plan["config"]["evaluation"]
    run, files = plan["runs"][i], RUN_FILES
    validation = (read_predictions(Path(run["dir"]) / files["val_predictions"], classes)
                  if evaluation["temperature_scaling"] else None)
    values, scaled = run_calibration(test, validation, positive)
    return {**values, **read_shortcut_score(Path(run["dir"]) / files["gradcam"], evaluation["lung_box"]),
            "scaled": scaled}


def _summary(plan: dict, finished: _Finished, metrics: list[str], selection: str,
             bootstrap: st.SharedBootstrap) -> tuple[list[dict], dict]:
    """A ``summary`` row per configuration, and its test metrics on the shared resamples
    (a :class:`scripts.stats.comparisons.Resampled` per configuration key and metric). The
    intervals over seeds and test images are appended after the other columns."""
    done, predictions, per_run = finished.done, finished.predictions, finished.per_run
    summary, resampled = [], {}
    for key, group in done.groupby(CONFIG, sort=True):
        ordered = group.sort_values("seed").index
        _check_same_test_set(plan, group.index, predictions, predictions[done.index[0]][0], "test set")
        probabilities = [predictions[i][2] for i in ordered]
        row = summarise_config(group, metrics, selection)
        seeds = tuple(group.loc[ordered, "seed"])
        seeds_and_images = {}
        for metric in metrics:
            per_seed = bootstrap.per_seed(metric, probabilities)
            resampled[key, metric] = Resampled(seeds, per_seed, bootstrap.per_seed_estimate(metric, probabilities))
            low, high = np.percentile(per_seed.mean(axis=0), [2.5, 97.5])
            row.update({f"{metric}_test_low": float(low), f"{metric}_test_high": float(high)})
            both = bootstrap.seeds_and_images(per_seed, resampled[key, metric].per_seed_estimate)
            # Clipped to the metric's range, as the seed interval is: only impossible values go.
            seeds_and_images.update({f"{metric}_seeds_images_{end}": float(np.clip(both[end], *VALUE_RANGES[metric]))
                                     for end in ("low", "high")})
        row["per_class"] = json.dumps(_per_class(group.index, finished.files, finished.classes))
        row["cam_cells"] = per_run[ordered[0]]["cam_cells"]
        row["cam_informative"] = per_run[ordered[0]]["cam_informative"]
        row.update(calibration_test_intervals([predictions[i] for i in ordered], bootstrap.counts,
                                              [per_run[i]["scaled"] for i in ordered]))
        row["reliability"] = json.dumps(reliability([predictions[i] for i in ordered],
                                                    [per_run[i]["scaled"] for i in ordered]))
        summary.append({**row, **seeds_and_images})
    return summary, resampled


def summarise_config(group: pd.DataFrame, metrics: list[str], selection: str) -> dict:
    """Means and seed t-intervals of one configuration's finished runs (its test
    ``metrics``, the validation selection metric and the per-run :data:`PER_RUN` values)."""
    row = {key: group.iloc[0][key] for key in CONFIG}
    row["n_seeds"] = len(group)
    row["seeds"] = " ".join(str(s) for s in sorted(group["seed"]))
    for metric in [*metrics, f"val_{selection}", *PER_RUN]:
        mean, low, high, n = st.bounded_t_interval(group[metric], VALUE_RANGES[metric.removeprefix("val_")])
        row.update({metric: mean, f"{metric}_seed_low": low, f"{metric}_seed_high": high, f"{metric}_n": n})
    change = group[selection] - group[f"val_{selection}"]  # per seed: test minus validation
    row["val_test_change"], row["val_test_change_sd"] = float(change.mean()), float(change.std(ddof=1))
    for cost in COSTS:
        row[cost] = float(pd.to_numeric(group[cost]).mean())
    kept = group.sort_values("seed")["best_epoch"]
    row["kept_epochs"] = " ".join("–" if pd.isna(e) else str(int(e)) for e in kept)
    return row


def _per_class(indices, files: dict, classes: list[str]) -> dict:
    """Per class, the mean over seeds of precision, recall, specificity, F1 and the support."""
    table = {}
    for name in classes:
        values = [files[i]["metrics"]["test"]["per_class"][name] for i in indices]
        table[name] = {key: float(np.nanmean([v[key] for v in values])) for key in values[0]}
    return table


def _check_same_test_set(plan: dict, indices, predictions: dict, paths: list[str], what: str) -> None:
    """Every run of ``indices`` predicted the same test images (``paths``): else the runs
    cannot be compared on shared resamples."""
    for i in indices:
        if predictions[i][0] != paths:
            raise ValueError(f"{plan['runs'][i]['dir']}: its {what} differs from the other runs'")


# --- does it generalise -------------------------------------------------------------------------

def _external(name: str, plan: dict, done: pd.DataFrame, selection: str, internal: dict,
              trained: list[str], internal_groups: np.ndarray | None) -> tuple[list[dict], dict]:
    """Per configuration and external test set: mean over seeds of each metric on the
    external test images (near-duplicates of the trained dataset's images left out unless
    ``near_duplicates: keep``), with seed and test-image intervals, and the same on the
    internal test set (``internal``: the runs' test predictions over the ``trained`` classes)
    mapped by the same class map (columns ``internal_mapped_<metric>``, its test images drawn
    by patient like the dataset's own intervals: ``internal_groups``, None without groups);
    and per external test set what was evaluated."""
    evaluation = plan["config"]["evaluation"]
    rows, info = [], {}
    for test in plan["config"]["datasets"][name]["external_tests"]:
        external = test["dataset"]
        described = plan["datasets"][name]["external"][external]
        if not Path(described["overlap"]).exists():  # allow_missing_runs: its data checks did not finish
            info[external] = {"missing": True, "verify": described["verify"], "class_map": test["class_map"]}
            continue
        overlap = fsutil.read_table(described["overlap"], converters={"near_duplicate": csv_boolean})
        duplicates = overlap[overlap["near_duplicate"].eq(True)]
        excluded = frozenset(duplicates["path"]) if test["near_duplicates"] == "exclude" else frozenset()
        classes = external_classes(test["class_map"])
        positive = positive_index(classes, described["positive_class"])
        metrics = study_metrics(positive is not None, len(classes), selection)
        predictions = {i: read_predictions(Path(plan["runs"][i]["dir"]) / RUN_FILES["external"], classes,
                                           external, excluded) for i in done.index}
        paths, labels, _ = predictions[done.index[0]]
        info[external] = {"missing": False, "classes": classes, "positive_class": described["positive_class"],
                          "metrics": metrics,
                          "class_map": test["class_map"], "n_test": len(overlap), "n_evaluated": len(paths),
                          "policy": test["near_duplicates"], "verify": described["verify"],
                          "near_duplicates": duplicates.to_dict("records")}
        if not paths:
            continue
        bootstrap = st.SharedBootstrap(labels, evaluation["bootstrap_resamples"], evaluation["bootstrap_seed"],
                                       positive)
        # the internal test set on the same mapped task, so that the gap compares like with like
        mapped_labels = collapse_labels(internal[done.index[0]][1], trained, test["class_map"])
        internal_bootstrap = st.SharedBootstrap(mapped_labels, evaluation["bootstrap_resamples"],
                                                evaluation["bootstrap_seed"], positive, internal_groups)
        for _, group in done.groupby(CONFIG, sort=True):
            ordered = group.sort_values("seed").index
            _check_same_test_set(plan, ordered, predictions, paths, f"{external} test set")
            probabilities = [predictions[i][2] for i in ordered]
            mapped = [collapse(internal[i][2], trained, test["class_map"]) for i in ordered]
            row = {**{key: group.iloc[0][key] for key in CONFIG}, "external": external,
                   "n_seeds": len(ordered), "n_images": len(paths), "n_internal_images": len(mapped_labels),
                   **_seed_and_test_intervals(metrics, bootstrap, probabilities, ""),
                   **_seed_and_test_intervals(metrics, internal_bootstrap, mapped, INTERNAL_MAPPED)}
            rows.append(row)
    return rows, info


def _seed_and_test_intervals(metrics: list[str], bootstrap: st.SharedBootstrap, probabilities: list[np.ndarray],
                             prefix: str) -> dict:
    """Per metric (column ``prefix + metric``): the mean over seeds, its seed t-interval and
    its test-image bootstrap interval on ``bootstrap``'s resamples."""
    row = {}
    for metric in metrics:
        name = prefix + metric
        mean, low, high, _ = st.bounded_t_interval(bootstrap.per_seed_estimate(metric, probabilities),
                                                   VALUE_RANGES[metric])
        test_low, test_high = np.percentile(bootstrap.resampled(metric, probabilities), [2.5, 97.5])
        row.update({name: mean, f"{name}_seed_low": low, f"{name}_seed_high": high,
                    f"{name}_test_low": float(test_low), f"{name}_test_high": float(test_high)})
    return row
