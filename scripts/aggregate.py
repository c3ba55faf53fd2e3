"""The study's statistics, from the plan and the finished runs' files.

* ``runs``: every planned run, its status, test and validation metrics, cost and provenance;
* ``summary``: per configuration (dataset × model × strategy × pretraining × fraction) the
  mean over seeds of each metric with two intervals: over seeds (t-interval: training
  variation) and over test images (stratified bootstrap of the test set: test-sample
  variation given the trained models);
* ``comparisons``: every configuration against the scratch baseline on the same test
  resamples (paired bootstrap), Holm-adjusted within each dataset × fraction × metric;
* ``verdict``: per dataset the configuration chosen on *validation* (mean over seeds of
  the selection metric), its test metrics and comparisons. The test set never chooses.

The questions a transfer-learning study is judged on:

* ``learning_curve``: how much labelled data: per configuration and training fraction the
  mean number of training images, the test selection metric with its intervals and the
  comparison with the baseline at that fraction; the verdict states per pretrained
  configuration at which sizes it beats the baseline (:data:`BEATS_RULE`);
* ``external``: does it generalise: per configuration the metrics on each external test
  set (class-mapped), mean over seeds with seed and test-image intervals;
* calibration (``runs`` and ``summary``): top-label ECE in :data:`ECE_BINS` equal-width
  bins, the multi-class Brier score, optionally after temperature scaling fitted on the
  run's validation predictions; reliability bins per configuration;
* shortcuts (``runs``, ``summary``, verdict): the share of Grad-CAM mass outside the
  central lung box (:mod:`scripts.shortcut`), flagged above a threshold;
* ``pretraining``: each pretraining source against random init (``none``) for the same
  backbone, strategy and fraction (paired bootstrap, Holm).

The report only renders these.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd

from scripts import fsutil, shortcut
from scripts import statistics as st
from scripts.evaluation import positive_index
from scripts.external import external_classes

METRICS = ["accuracy", "balanced_accuracy", "f1_macro", "precision_macro", "recall_macro",
           "specificity_macro", "auc", "sensitivity", "specificity"]
COSTS = ["train_seconds", "seconds_per_epoch", "images_per_second", "trainable_params", "total_params",
         "backbone_trainable_share", "epochs_run", "peak_rss_mb", "n_train"]
CONFIG = ["dataset", "model", "strategy", "weights", "fraction"]
BASELINE = {"model": "scratch_cnn", "strategy": "scratch"}
RANDOM_INIT = "none"
COMPARISON_COLUMNS = [*CONFIG, "metric", "n_pairs", "difference", "low", "high", "p_value", "p_holm"]
ECE_BINS = 15  # equal-width bins of top-label confidence over [0, 1]
CALIBRATION = ["ece", "brier", "temperature", "ece_scaled", "brier_scaled"]
PER_RUN = [*CALIBRATION, "shortcut_score"]  # computed here per run, summarised per configuration
SIGNIFICANCE = 0.05
BEATS_RULE = ("beats = a positive difference in the test selection metric against the scratch CNN baseline "
              "at the same training fraction (paired bootstrap over the test images, shared seeds) with a "
              f"Holm-adjusted p < {SIGNIFICANCE}")


def headline(binary: bool) -> list[str]:
    """The metrics the verdict and the comparisons show, and that are bootstrapped."""
    return ["accuracy", "f1_macro", "auc"] + (["sensitivity", "specificity"] if binary
                                              else ["recall_macro", "specificity_macro"])


def study_metrics(binary: bool, selection: str) -> list[str]:
    """The headline metrics and the selection metric (the learning curve's)."""
    metrics = headline(binary)
    return metrics if selection in metrics else [*metrics, selection]


def _read_run(run: dict, run_files: dict) -> dict | None:
    """train.json and metrics.json of a finished run, None when it did not finish."""
    folder = Path(run["dir"])
    info_file, metrics_file = folder / run_files["info"], folder / run_files["metrics"]
    if not (info_file.exists() and metrics_file.exists()):
        return None
    return {"info": fsutil.read_json(info_file), "metrics": fsutil.read_json(metrics_file)}


def run_row(run: dict, files: dict | None) -> dict:
    """Metrics, cost and provenance of one planned run; ``status=missing`` when it did not finish."""
    row = {key: run[key] for key in (*CONFIG, "seed", "dir", "log_dir")}
    row["fraction"] = float(row["fraction"])
    if files is None:
        return {**row, "status": "missing"}
    info, metrics = files["info"], files["metrics"]
    env = info["environment"]
    return {
        **row,
        "status": "ok",
        **{m: metrics["test"].get(m) for m in METRICS},
        **{f"val_{m}": metrics["validation"].get(m) for m in METRICS},
        **{c: info.get(c) for c in COSTS},
        "weights_source": info["weights"]["source"],
        "weights_sha256": info["weights"].get("sha256"),
        "host": env["host"],
        "slurm_job_id": env["slurm_job_id"],
        "cuda_visible_devices": env["cuda_visible_devices"],
        "devices": ",".join(info["devices"]),
        "threads": info["threads"],
        "precision_policy": info["precision_policy"],
        "training_input": training_input(info),
        "best_epoch": info["best_epoch"],
        "software": json.dumps(env["packages"], sort_keys=True),
    }


def training_input(info: dict) -> str:
    """How the run saw its training images (cached features trade augmentation for speed)."""
    if info["strategy"] == "linear_probe":
        return "cached features (logistic regression)"
    source = "cached features" if info.get("feature_cache") else "features"
    parts = []
    if info["strategy"] in ("frozen", "partial", "full"):
        parts.append(f"head on {source}" + (" (reused)" if info.get("feature_cache_reused") else ""))
    if info["augmentation_applied"]:
        parts.append("augmented images")
    return ", then ".join(parts) or "images, no augmentation"


def read_predictions(path: str | Path, classes: list[str], dataset: str | None = None,
                     excluded: frozenset = frozenset()) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A predictions table as ``(paths, label indices, probabilities)``, sorted by path.
    ``dataset``: only that external dataset's rows (external predictions); ``excluded``:
    paths left out.

    The csv module, not pandas: a 10,000-run grid reads 10,000 small tables, and
    ``pandas.read_csv`` costs 1.5 ms of set-up each (measured), 15 s in all.
    """
    with open(path, newline="", encoding="utf-8") as handle:
        rows = sorted((row for row in csv.DictReader(handle)
                       if (dataset is None or row["dataset"] == dataset) and row["path"] not in excluded),
                      key=lambda row: row["path"])
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index[row["label"]] for row in rows], dtype=int)
    probabilities = np.array([[float(row[f"p_{name}"]) for name in classes] for row in rows]).reshape(
        len(rows), len(classes))
    return [row["path"] for row in rows], labels, probabilities


class Bootstrap:
    """Resampled test metrics of every configuration of one dataset, on shared resamples
    (so any two configurations compare pairwise)."""

    def __init__(self, y_true: np.ndarray, resamples: int, seed: int, positive: int | None):
        self.y_true, self.positive = y_true, positive
        self.indices = st.stratified_bootstrap(y_true, resamples, seed)
        self.identity = np.arange(len(y_true))[None, :]

    def resampled(self, metric: str, probabilities: list[np.ndarray]) -> np.ndarray:
        return st.mean_over_seeds(metric, self.y_true, probabilities, self.indices, self.positive)

    def estimate(self, metric: str, probabilities: list[np.ndarray]) -> float:
        return float(st.mean_over_seeds(metric, self.y_true, probabilities, self.identity, self.positive)[0])


def _config_key(row) -> tuple:
    return tuple(row[key] for key in CONFIG)


def summarise_config(group: pd.DataFrame, metrics: list[str], selection: str) -> dict:
    """Means and seed t-intervals of one configuration's finished runs (its test
    ``metrics``, the validation selection metric and the per-run :data:`PER_RUN` values)."""
    row = {key: group.iloc[0][key] for key in CONFIG}
    row["n_seeds"] = len(group)
    row["seeds"] = " ".join(str(s) for s in sorted(group["seed"]))
    for metric in [*metrics, f"val_{selection}", *PER_RUN]:
        mean, low, high, n = st.t_interval(group[metric])
        row.update({metric: mean, f"{metric}_seed_low": low, f"{metric}_seed_high": high, f"{metric}_n": n})
    for cost in COSTS:
        row[cost] = float(pd.to_numeric(group[cost]).mean())
    kept = group.sort_values("seed")["best_epoch"]
    row["kept_epochs"] = " ".join("–" if pd.isna(e) else str(int(e)) for e in kept)
    return row


# --- per run: calibration and the shortcut score -------------------------------------------------

def run_calibration(test: tuple, validation: tuple | None) -> tuple[dict, np.ndarray | None]:
    """ECE and Brier score of a run's test predictions ``(paths, labels, probabilities)``;
    with ``validation`` predictions also the temperature fitted on them (NLL) and the
    test ECE and Brier score after it. Returns the values and the rescaled test probabilities."""
    _, labels, probabilities = test
    values = {"ece": st.expected_calibration_error(labels, probabilities, ECE_BINS),
              "brier": st.brier_score(labels, probabilities),
              "temperature": np.nan, "ece_scaled": np.nan, "brier_scaled": np.nan}
    if validation is None or len(validation[1]) == 0:
        return values, None
    _, val_labels, val_probabilities = validation
    # log p as logits (softmax(log p / T) = softmax(z / T)); clipped: a probability may underflow to 0
    temperature = st.fit_temperature(np.log(np.clip(val_probabilities, 1e-12, 1.0)), val_labels)
    scaled = st.apply_temperature(probabilities, temperature)
    values.update(temperature=temperature, ece_scaled=st.expected_calibration_error(labels, scaled, ECE_BINS),
                  brier_scaled=st.brier_score(labels, scaled))
    return values, scaled


def run_shortcut(gradcam_path: str | Path, box: list[float]) -> dict:
    """Mean share of Grad-CAM mass outside ``box`` over a run's test images (all-zero maps
    left out), and the maps' resolution."""
    with np.load(gradcam_path) as saved:
        cams = saved["cams"]
    shares = shortcut.outside_share(cams, box) if len(cams) else np.array([])
    finite = shares[~np.isnan(shares)]
    height, width = cams.shape[1:3] if cams.ndim == 3 else (0, 0)
    return {"shortcut_score": float(finite.mean()) if len(finite) else np.nan,
            "cam_cells": f"{height}x{width}", "cam_informative": shortcut.informative(height, width, box)
            if height and width else False}


def _run_extras(plan: dict, i: int, test: tuple, classes: list[str]) -> dict:
    evaluation = plan["config"]["evaluation"]
    run, files = plan["runs"][i], plan["run_files"]
    validation = (read_predictions(Path(run["dir"]) / files["val_predictions"], classes)
                  if evaluation["temperature_scaling"] else None)
    values, scaled = run_calibration(test, validation)
    return {**values, **run_shortcut(Path(run["dir"]) / files["gradcam"], evaluation["lung_box"]),
            "scaled": scaled}


def reliability(tests: list[tuple], scaled: list[np.ndarray | None]) -> dict:
    """Reliability bins of a configuration, its seeds' test predictions pooled; before and
    (when the probabilities were rescaled) after temperature scaling."""
    labels = np.concatenate([test[1] for test in tests])
    before = st.reliability_bins(labels, np.concatenate([test[2] for test in tests]), ECE_BINS)
    after = (st.reliability_bins(labels, np.concatenate(scaled), ECE_BINS)
             if scaled and all(s is not None for s in scaled) else None)
    return {"before": before, "after": after}


# --- per dataset -----------------------------------------------------------------------------------

def _empty_dataset(name: str) -> dict:
    verdict = {"dataset": name, "finished": 0, "chosen": None, "learning_curve": None, "shortcut": None,
               "external": {}}
    return {"summary": [], "comparisons": [], "learning_curve": [], "external": [], "pretraining": [],
            "per_run": {}, "verdict": verdict}


def _dataset_tables(name: str, plan: dict, runs: pd.DataFrame, files: dict) -> dict:
    config = plan["config"]
    evaluation = config["evaluation"]
    selection = evaluation["selection_metric"]
    done = runs[(runs["dataset"] == name) & (runs["status"] == "ok")]
    if done.empty:
        return _empty_dataset(name)
    first = files[done.index[0]]["info"]
    classes = first["classes"]
    positive_class = config["datasets"][name].get("positive_class")
    positive = positive_index(classes, positive_class)
    metrics = study_metrics(len(classes) == 2 and positive is not None, selection)
    tables = {i: read_predictions(Path(plan["runs"][i]["dir"]) / plan["run_files"]["predictions"], classes)
              for i in done.index}
    per_run = {i: _run_extras(plan, i, tables[i], classes) for i in done.index}
    done = done.assign(**{key: [per_run[i][key] for i in done.index] for key in PER_RUN})
    paths, y_true, _ = tables[done.index[0]]
    bootstrap = Bootstrap(y_true, evaluation["bootstrap_resamples"], evaluation["bootstrap_seed"], positive)

    summary, resampled = [], {}
    for key, group in done.groupby(CONFIG, sort=True):
        for i in group.index:
            if tables[i][0] != paths:
                raise ValueError(f"{plan['runs'][i]['dir']}: its test set differs from the other runs'")
        ordered = group.sort_values("seed").index
        probabilities = [tables[i][2] for i in ordered]
        row = summarise_config(group, metrics, selection)
        by_seed = dict(zip(group.loc[ordered, "seed"], probabilities, strict=True))
        for metric in metrics:
            resampled[key, metric] = (by_seed, bootstrap.resampled(metric, probabilities),
                                      bootstrap.estimate(metric, probabilities))
            low, high = np.percentile(resampled[key, metric][1], [2.5, 97.5])
            row.update({f"{metric}_test_low": float(low), f"{metric}_test_high": float(high)})
        row["per_class"] = json.dumps(_per_class(group.index, files, classes))
        row["cam_cells"] = per_run[ordered[0]]["cam_cells"]
        row["cam_informative"] = per_run[ordered[0]]["cam_informative"]
        row["reliability"] = json.dumps(reliability([tables[i] for i in ordered],
                                                    [per_run[i]["scaled"] for i in ordered]))
        summary.append(row)

    comparisons = _comparisons(summary, resampled, metrics, bootstrap)
    curve = learning_curve(summary, comparisons, selection)
    external, external_info = _external(name, plan, done, selection)
    verdict = _verdict(name, summary, comparisons, metrics, selection, classes, positive_class,
                       len(paths), len(done))
    verdict.update(learning_curve={"metric": selection, "rule": BEATS_RULE,
                                   "fractions": sorted({row["fraction"] for row in summary}),
                                   "statements": learning_statements(curve)},
                   shortcut=shortcut_verdict(summary, evaluation, verdict.get("chosen")),
                   external=external_info,
                   calibration={"bins": ECE_BINS, "temperature_scaling": evaluation["temperature_scaling"]})
    return {"summary": summary, "comparisons": comparisons, "learning_curve": curve, "external": external,
            "pretraining": _pretraining(summary, resampled, metrics, bootstrap),
            "per_run": {i: {k: v for k, v in extras.items() if k != "scaled"} for i, extras in per_run.items()},
            "verdict": verdict}


def _per_class(indices, files: dict, classes: list[str]) -> dict:
    """Per class, the mean over seeds of precision, recall, specificity, F1 and the support."""
    table = {}
    for name in classes:
        values = [files[i]["metrics"]["test"]["per_class"][name] for i in indices]
        table[name] = {key: float(np.nanmean([v[key] for v in values])) for key in values[0]}
    return table


# --- paired comparisons ----------------------------------------------------------------------------

def _paired(config: dict, reference: dict, resampled: dict, metrics: list[str], bootstrap: Bootstrap) -> list[dict]:
    """``config`` minus ``reference`` per metric on the same test resamples; the seeds the
    two share are paired (same split), the rest left out. Empty when the reference did not run."""
    key, base_key = _config_key(config), _config_key(reference)
    if (base_key, metrics[0]) not in resampled:
        return []
    rows = []
    for metric in metrics:
        seeds_a, values_a, estimate_a = resampled[key, metric]
        seeds_b, values_b, estimate_b = resampled[base_key, metric]
        common = sorted(set(seeds_a) & set(seeds_b))
        if not common:
            continue
        if len(common) != len(seeds_a) or len(common) != len(seeds_b):  # pair the shared seeds only
            a, b = [seeds_a[s] for s in common], [seeds_b[s] for s in common]
            values_a, values_b = bootstrap.resampled(metric, a), bootstrap.resampled(metric, b)
            estimate_a, estimate_b = bootstrap.estimate(metric, a), bootstrap.estimate(metric, b)
        low, high = np.percentile(values_a - values_b, [2.5, 97.5])
        rows.append({**{k: config[k] for k in CONFIG}, "metric": metric, "n_pairs": len(common),
                     "difference": estimate_a - estimate_b, "low": float(low), "high": float(high),
                     "p_value": st.bootstrap_p_value(values_a - values_b)})
    return rows


def _with_holm(rows: list[dict]) -> list[dict]:
    """Holm-adjusted p-values within each dataset × fraction × metric."""
    frame = pd.DataFrame(rows, columns=COMPARISON_COLUMNS[:-1])
    frame["p_holm"] = np.nan
    for _, family in frame.groupby(["dataset", "fraction", "metric"]):
        frame.loc[family.index, "p_holm"] = st.holm(family["p_value"])
    return frame.to_dict("records")


def _comparisons(summary: list[dict], resampled: dict, metrics: list[str], bootstrap: Bootstrap) -> list[dict]:
    """Each configuration minus the baseline (same dataset and fraction)."""
    rows = []
    for config in summary:
        if config["model"] == BASELINE["model"] and config["strategy"] == BASELINE["strategy"]:
            continue
        rows += _paired(config, {**config, **BASELINE, "weights": RANDOM_INIT}, resampled, metrics, bootstrap)
    return _with_holm(rows)


def _pretraining(summary: list[dict], resampled: dict, metrics: list[str], bootstrap: Bootstrap) -> list[dict]:
    """Each pretraining source minus random init (``none``) for the same backbone,
    strategy and fraction."""
    rows = []
    for config in summary:
        if config["strategy"] != "scratch" and config["weights"] != RANDOM_INIT:
            rows += _paired(config, {**config, "weights": RANDOM_INIT}, resampled, metrics, bootstrap)
    return _with_holm(rows)


# --- how much labelled data ------------------------------------------------------------------------

def learning_curve(summary: list[dict], comparisons: list[dict], metric: str) -> list[dict]:
    """Per configuration and fraction: mean training images, the test ``metric`` with its
    intervals, and its comparison with the baseline at that fraction (``beats``: see
    :data:`BEATS_RULE`; None where there is no comparison)."""
    versus = {(*_config_key(c), c["metric"]): c for c in comparisons}
    rows = []
    for config in summary:
        row = {**{key: config[key] for key in CONFIG}, "n_train": config["n_train"], "n_seeds": config["n_seeds"],
               "metric": metric, "value": config[metric]}
        for bound in ("seed_low", "seed_high", "test_low", "test_high"):
            row[bound] = config[f"{metric}_{bound}"]
        compared = versus.get((*_config_key(config), metric))
        for column in ("n_pairs", "difference", "low", "high", "p_holm"):
            row[column] = compared[column] if compared else np.nan
        row["beats"] = (bool(compared["difference"] > 0 and compared["p_holm"] < SIGNIFICANCE)
                        if compared else None)
        rows.append(row)
    return sorted(rows, key=lambda r: (*_config_key(r)[:4], r["fraction"]))


def _sizes(points: list[dict]) -> str:
    return ", ".join(f"{p['n_train']:.0f} ({p['fraction']:.0%})" for p in points)


def learning_statements(curve: list[dict]) -> list[dict]:
    """Per pretrained configuration (model × strategy × pretraining): at which training-set
    sizes it beats the baseline, where it stops, or that it never does."""
    statements = []
    configs = {}
    for row in curve:
        if row["strategy"] != "scratch":
            configs.setdefault((row["model"], row["strategy"], row["weights"]), []).append(row)
    for (model, strategy, weights), points in configs.items():
        points = sorted(points, key=lambda p: p["fraction"])
        compared = [p for p in points if p["beats"] is not None]
        wins = [p for p in compared if p["beats"]]
        losses = [p for p in compared if not p["beats"]]
        statements.append({"model": model, "strategy": strategy, "weights": weights,
                           "beats_at": [p["fraction"] for p in wins], "not_at": [p["fraction"] for p in losses],
                           "text": _statement_text(points, compared, wins, losses),
                           "too_few_seeds": any(p["n_pairs"] < 3 for p in compared)})
    return statements


def _statement_text(points: list[dict], compared: list[dict], wins: list[dict], losses: list[dict]) -> str:
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


# --- is it looking at the lungs -------------------------------------------------------------------

def shortcut_verdict(summary: list[dict], evaluation: dict, chosen: dict | None) -> dict:
    """The configurations whose mean shortcut score exceeds the threshold."""
    threshold, box = evaluation["shortcut_threshold"], evaluation["lung_box"]
    flagged = [{**{key: row[key] for key in CONFIG}, "score": row["shortcut_score"], "cells": row["cam_cells"]}
               for row in summary if row["shortcut_score"] > threshold]
    return {"threshold": threshold, "box": box, "uniform": shortcut.uniform_score(box), "flagged": flagged,
            "chosen_flagged": bool(chosen) and any(_config_key(f) == _config_key(chosen) for f in flagged)}


# --- does it generalise -------------------------------------------------------------------------

def _external(name: str, plan: dict, done: pd.DataFrame, selection: str) -> tuple[list[dict], dict]:
    """Per configuration and external test set: mean over seeds of each metric on the
    external test images (near-duplicates of the trained dataset's images left out unless
    ``near_duplicates: keep``), with seed and test-image intervals; and per external test
    set what was evaluated."""
    evaluation = plan["config"]["evaluation"]
    rows, info = [], {}
    for test in plan["config"]["datasets"][name]["external_tests"]:
        external = test["dataset"]
        described = plan["datasets"][name]["external"][external]
        if not Path(described["overlap"]).exists():  # allow_missing_runs: its data checks did not finish
            info[external] = {"missing": True, "verify": described["verify"], "class_map": test["class_map"]}
            continue
        overlap = pd.read_csv(described["overlap"], keep_default_na=False)
        duplicates = overlap[overlap["near_duplicate"].astype(str) == "True"]
        excluded = frozenset(duplicates["path"]) if test["near_duplicates"] == "exclude" else frozenset()
        classes = external_classes(test["class_map"])
        positive = positive_index(classes, described["positive_class"])
        metrics = study_metrics(positive is not None, selection)
        predictions = {i: read_predictions(Path(plan["runs"][i]["dir"]) / plan["run_files"]["external"], classes,
                                           external, excluded) for i in done.index}
        paths, labels, _ = predictions[done.index[0]]
        info[external] = {"missing": False, "classes": classes, "positive_class": described["positive_class"],
                          "metrics": metrics,
                          "class_map": test["class_map"], "n_test": len(overlap), "n_evaluated": len(paths),
                          "policy": test["near_duplicates"], "verify": described["verify"],
                          "near_duplicates": duplicates.to_dict("records")}
        if not paths:
            continue
        bootstrap = Bootstrap(labels, evaluation["bootstrap_resamples"], evaluation["bootstrap_seed"], positive)
        for _, group in done.groupby(CONFIG, sort=True):
            ordered = group.sort_values("seed").index
            for i in ordered:
                if predictions[i][0] != paths:
                    raise ValueError(f"{plan['runs'][i]['dir']}: its {external} test set differs from the other runs'")
            probabilities = [predictions[i][2] for i in ordered]
            row = {**{key: group.iloc[0][key] for key in CONFIG}, "external": external,
                   "n_seeds": len(ordered), "n_images": len(paths)}
            for metric in metrics:
                mean, low, high, _ = st.t_interval([bootstrap.estimate(metric, [p]) for p in probabilities])
                test_low, test_high = np.percentile(bootstrap.resampled(metric, probabilities), [2.5, 97.5])
                row.update({metric: mean, f"{metric}_seed_low": low, f"{metric}_seed_high": high,
                            f"{metric}_test_low": float(test_low), f"{metric}_test_high": float(test_high)})
            rows.append(row)
    return rows, info


def _verdict(name: str, summary: list[dict], comparisons: list[dict], metrics: list[str], selection: str,
             classes: list[str], positive_class: str | None, n_test: int, finished: int) -> dict:
    """The configuration with the best mean validation ``selection`` metric (at the
    largest training fraction), with its test metrics and comparisons."""
    largest = max(row["fraction"] for row in summary)
    candidates = [row for row in summary if row["fraction"] == largest and not np.isnan(row[f"val_{selection}"])]
    verdict = {"dataset": name, "finished": finished, "classes": classes, "positive_class": positive_class,
               "n_test": n_test, "metrics": metrics, "selection_metric": selection, "fraction": largest,
               "n_candidates": len(candidates), "chosen": None}
    if not candidates:
        return verdict
    chosen = max(candidates, key=lambda row: (row[f"val_{selection}"], -row["trainable_params"]))
    versus = [c for c in comparisons if all(c[key] == chosen[key] for key in CONFIG)]
    verdict.update(
        chosen=chosen,
        per_class=json.loads(chosen["per_class"]),
        is_baseline=chosen["model"] == BASELINE["model"] and chosen["strategy"] == BASELINE["strategy"],
        versus=versus,
        too_few_seeds=chosen["n_seeds"] < 3,
        n_comparisons=len({(c["model"], c["strategy"], c["weights"]) for c in comparisons
                           if c["fraction"] == largest}),
    )
    return verdict


def software(runs: pd.DataFrame) -> list[dict]:
    """The package versions the training jobs ran with, and how many runs used each set."""
    done = runs[runs["status"] == "ok"]
    if done.empty:
        return []
    return [{"packages": json.loads(text), "runs": int(count)}
            for text, count in done["software"].value_counts().items()]


LEARNING_CURVE_COLUMNS = [*CONFIG, "n_train", "n_seeds", "metric", "value", "seed_low", "seed_high", "test_low",
                          "test_high", "n_pairs", "difference", "low", "high", "p_holm", "beats"]
EXTERNAL_CONFIG = [*CONFIG, "external", "n_seeds", "n_images"]


def aggregate(plan: dict) -> dict:
    """The study's tables (DataFrames) ``runs``, ``summary``, ``comparisons``,
    ``learning_curve``, ``external``, ``pretraining``, and the ``verdict`` (dict).

    The datasets are those the plan trains on (``plan["datasets"]``); test-only
    datasets appear in the ``external`` table of the datasets that name them.
    """
    files = {i: _read_run(run, plan["run_files"]) for i, run in enumerate(plan["runs"])}
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
        "pretraining": pd.DataFrame(joined("pretraining"), columns=COMPARISON_COLUMNS),
        "verdict": {"datasets": {name: part["verdict"] for name, part in parts.items()},
                    "software": software(runs),
                    "bootstrap": {"resamples": evaluation["bootstrap_resamples"],
                                  "seed": evaluation["bootstrap_seed"]},
                    "selection_metric": evaluation["selection_metric"],
                    "finished": int((runs["status"] == "ok").sum()) if len(runs) else 0,
                    "planned": len(runs)},
    }
