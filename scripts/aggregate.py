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

The report only renders these.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd

from scripts import fsutil
from scripts import statistics as st
from scripts.evaluation import positive_index

METRICS = ["accuracy", "balanced_accuracy", "f1_macro", "precision_macro", "recall_macro",
           "specificity_macro", "auc", "sensitivity", "specificity"]
COSTS = ["train_seconds", "seconds_per_epoch", "images_per_second", "trainable_params", "total_params",
         "backbone_trainable_share", "epochs_run", "peak_rss_mb", "n_train"]
CONFIG = ["dataset", "model", "strategy", "weights", "fraction"]
BASELINE = {"model": "scratch_cnn", "strategy": "scratch"}


def headline(binary: bool) -> list[str]:
    """The metrics the verdict and the comparisons show, and that are bootstrapped."""
    return ["accuracy", "f1_macro", "auc"] + (["sensitivity", "specificity"] if binary
                                              else ["recall_macro", "specificity_macro"])


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


def read_predictions(path: str | Path, classes: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A predictions table as ``(paths, label indices, probabilities)``, sorted by path.

    The csv module, not pandas: a 10,000-run grid reads 10,000 small tables, and
    ``pandas.read_csv`` costs 1.5 ms of set-up each (measured), 15 s in all.
    """
    with open(path, newline="", encoding="utf-8") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: row["path"])
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index[row["label"]] for row in rows])
    probabilities = np.array([[float(row[f"p_{name}"]) for name in classes] for row in rows])
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
    """Means and seed t-intervals of one configuration's finished runs."""
    row = {key: group.iloc[0][key] for key in CONFIG}
    row["n_seeds"] = len(group)
    row["seeds"] = " ".join(str(s) for s in sorted(group["seed"]))
    for metric in [*metrics, f"val_{selection}"]:
        mean, low, high, n = st.t_interval(group[metric])
        row.update({metric: mean, f"{metric}_seed_low": low, f"{metric}_seed_high": high, f"{metric}_n": n})
    for cost in COSTS:
        row[cost] = float(pd.to_numeric(group[cost]).mean())
    return row


def _dataset_tables(name: str, plan: dict, runs: pd.DataFrame, files: dict) -> tuple[list, list, dict]:
    config = plan["config"]
    evaluation = config["evaluation"]
    selection = evaluation["selection_metric"]
    done = runs[(runs["dataset"] == name) & (runs["status"] == "ok")]
    if done.empty:
        return [], [], {"dataset": name, "finished": 0, "chosen": None}
    first = files[done.index[0]]["info"]
    classes = first["classes"]
    positive_class = config["datasets"][name].get("positive_class")
    positive = positive_index(classes, positive_class)
    metrics = headline(len(classes) == 2 and positive is not None)
    tables = {i: read_predictions(Path(plan["runs"][i]["dir"]) / plan["run_files"]["predictions"], classes)
              for i in done.index}
    paths, y_true, _ = tables[done.index[0]]
    bootstrap = Bootstrap(y_true, evaluation["bootstrap_resamples"], evaluation["bootstrap_seed"], positive)

    summary, resampled = [], {}
    for key, group in done.groupby(CONFIG, sort=True):
        for i in group.index:
            if tables[i][0] != paths:
                raise ValueError(f"{plan['runs'][i]['dir']}: its test set differs from the other runs'")
        probabilities = [tables[i][2] for i in group.sort_values("seed").index]
        row = summarise_config(group, metrics, selection)
        by_seed = dict(zip(group.sort_values("seed")["seed"], probabilities, strict=True))
        for metric in metrics:
            resampled[key, metric] = (by_seed, bootstrap.resampled(metric, probabilities),
                                      bootstrap.estimate(metric, probabilities))
            low, high = np.percentile(resampled[key, metric][1], [2.5, 97.5])
            row.update({f"{metric}_test_low": float(low), f"{metric}_test_high": float(high)})
        row["per_class"] = json.dumps(_per_class(group.index, files, classes))
        summary.append(row)

    comparisons = _comparisons(name, summary, resampled, metrics, bootstrap)
    verdict = _verdict(name, summary, comparisons, metrics, selection, classes, positive_class,
                       len(paths), len(done))
    return summary, comparisons, verdict


def _per_class(indices, files: dict, classes: list[str]) -> dict:
    """Per class, the mean over seeds of precision, recall, specificity, F1 and the support."""
    table = {}
    for name in classes:
        values = [files[i]["metrics"]["test"]["per_class"][name] for i in indices]
        table[name] = {key: float(np.nanmean([v[key] for v in values])) for key in values[0]}
    return table


def _comparisons(name: str, summary: list[dict], resampled: dict, metrics: list[str],
                 bootstrap: Bootstrap) -> list[dict]:
    """Each configuration minus the baseline (same dataset and fraction) on the same test
    resamples; seeds the two share are paired (same split), the rest left out."""
    rows = []
    for config in summary:
        if config["model"] == BASELINE["model"] and config["strategy"] == BASELINE["strategy"]:
            continue
        base = {**config, **BASELINE, "weights": "none"}
        base_key = _config_key(base)
        if (base_key, metrics[0]) not in resampled:
            continue
        for metric in metrics:
            seeds_a, values_a, estimate_a = resampled[_config_key(config), metric]
            seeds_b, values_b, estimate_b = resampled[base_key, metric]
            common = sorted(set(seeds_a) & set(seeds_b))
            if not common:
                continue
            if len(common) != len(seeds_a) or len(common) != len(seeds_b):  # pair the shared seeds only
                a, b = [seeds_a[s] for s in common], [seeds_b[s] for s in common]
                values_a, values_b = bootstrap.resampled(metric, a), bootstrap.resampled(metric, b)
                estimate_a, estimate_b = bootstrap.estimate(metric, a), bootstrap.estimate(metric, b)
            difference = estimate_a - estimate_b
            low, high = np.percentile(values_a - values_b, [2.5, 97.5])
            rows.append({**{key: config[key] for key in CONFIG}, "metric": metric, "n_pairs": len(common),
                         "difference": difference, "low": float(low), "high": float(high),
                         "p_value": st.bootstrap_p_value(values_a - values_b)})
    frame = pd.DataFrame(rows, columns=[*CONFIG, "metric", "n_pairs", "difference", "low", "high", "p_value"])
    frame["p_holm"] = np.nan
    for _, family in frame.groupby(["dataset", "fraction", "metric"]):
        frame.loc[family.index, "p_holm"] = st.holm(family["p_value"])
    return frame.to_dict("records")


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


def aggregate(plan: dict) -> dict:
    """``{"runs", "summary", "comparisons" (DataFrames), "verdict" (dict)}`` of the study."""
    files = {i: _read_run(run, plan["run_files"]) for i, run in enumerate(plan["runs"])}
    runs = pd.DataFrame([run_row(run, files[i]) for i, run in enumerate(plan["runs"])])
    summary, comparisons, verdicts = [], [], {}
    for name in plan["config"]["datasets"]:
        rows, compared, verdicts[name] = _dataset_tables(name, plan, runs, files)
        summary += rows
        comparisons += compared
    evaluation = plan["config"]["evaluation"]
    return {
        "runs": runs,
        "summary": pd.DataFrame(summary),
        "comparisons": pd.DataFrame(comparisons, columns=[*CONFIG, "metric", "n_pairs", "difference", "low",
                                                          "high", "p_value", "p_holm"]),
        "verdict": {"datasets": verdicts, "software": software(runs),
                    "bootstrap": {"resamples": evaluation["bootstrap_resamples"],
                                  "seed": evaluation["bootstrap_seed"]},
                    "selection_metric": evaluation["selection_metric"],
                    "finished": int((runs["status"] == "ok").sum()) if len(runs) else 0,
                    "planned": len(runs)},
    }
