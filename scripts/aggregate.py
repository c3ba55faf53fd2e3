"""One table of every run, and mean ± 95% CI over seeds per dataset × model × strategy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from scripts import fsutil

METRICS = ["accuracy", "balanced_accuracy", "f1_macro", "auc", "sensitivity_macro",
           "specificity_macro", "precision_macro"]
COSTS = ["train_seconds", "seconds_per_epoch", "images_per_second", "trainable_params",
         "epochs_run", "peak_rss_mb"]
GROUP = ["dataset", "model", "strategy"]
BASELINE = ("scratch_cnn", "scratch")


def run_row(run_dir: str | Path, expected: dict) -> dict:
    """Metrics, cost and provenance of one run; ``status=missing`` when it did not finish."""
    run_dir = Path(run_dir)
    row = {**expected, "run_dir": str(run_dir)}
    train_file, metrics_file = run_dir / "train.json", run_dir / "metrics.json"
    if not (train_file.exists() and metrics_file.exists()):
        return {**row, "status": "missing"}
    info, metrics = fsutil.read_json(train_file), fsutil.read_json(metrics_file)
    env = info.get("environment", {})
    return {
        **row,
        "status": "ok",
        **{m: metrics.get(m) for m in METRICS},
        **{c: info.get(c) for c in COSTS},
        "weights_source": info["weights"].get("source"),
        "weights_sha256": info["weights"].get("sha256"),
        "host": env.get("host"),
        "slurm_job_id": env.get("slurm_job_id"),
        "cuda_visible_devices": env.get("cuda_visible_devices"),
        "devices": ",".join(info.get("devices", [])),
        "precision_policy": info.get("precision_policy"),
        "training_input": _training_input(info),
    }


def _training_input(info: dict) -> str:
    """How the run saw its training images (the frozen cache trades augmentation for speed)."""
    if info.get("feature_cache"):
        return "cached features, no augmentation" + (" (reused)" if info.get("feature_cache_reused") else "")
    return "augmented images" if info.get("augmentation_applied") else "images, no augmentation"


def collect(runs: list[dict], results: str = "results") -> pd.DataFrame:
    rows = []
    for run in runs:
        run_dir = Path(results, run["dataset"], "runs", run["model"], run["strategy"], f"seed{run['seed']}")
        rows.append(run_row(run_dir, run))
    return pd.DataFrame(rows)


def mean_ci(values) -> tuple[float, float, int]:
    """Mean and the half-width of its 95% t-interval (NaN with fewer than two values)."""
    values = np.asarray([v for v in values if v is not None and not pd.isna(v)], dtype=float)
    if len(values) == 0:
        return np.nan, np.nan, 0
    if len(values) < 2:
        return float(values.mean()), np.nan, 1
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean()), float(half), len(values)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    done = table[table["status"] == "ok"]
    rows = []
    for key, group in done.groupby(GROUP, sort=True):
        row = dict(zip(GROUP, key, strict=True))
        row["n_seeds"] = len(group)
        for metric in METRICS:
            mean, half, _ = mean_ci(group[metric])
            row[metric], row[f"{metric}_ci95"] = mean, half
        for cost in COSTS:
            row[cost] = float(group[cost].mean())
        rows.append(row)
    summary = pd.DataFrame(rows)
    if summary.empty:
        return summary
    return summary.sort_values(["dataset", "f1_macro"], ascending=[True, False])


def paired_comparison(table: pd.DataFrame, metric: str, baseline=BASELINE) -> pd.DataFrame:
    """Each model × strategy minus the baseline on the same dataset and seed (same split).

    Reports the mean paired difference, its 95% t-interval and the paired t-test p-value.
    """
    done = table[table["status"] == "ok"]
    rows = []
    for dataset, runs in done.groupby("dataset"):
        base = runs[(runs["model"] == baseline[0]) & (runs["strategy"] == baseline[1])]
        base = base.set_index("seed")[metric]
        for (model, strategy), group in runs.groupby(["model", "strategy"]):
            if (model, strategy) == baseline:
                continue
            paired = group.set_index("seed")[metric].to_frame("run").join(base.rename("base"), how="inner")
            paired = paired.dropna()
            diff = (paired["run"] - paired["base"]).to_numpy(dtype=float)
            mean, half, n = mean_ci(diff)
            p_value = np.nan
            if n >= 2 and np.std(diff) > 0:
                p_value = float(stats.ttest_rel(paired["run"], paired["base"]).pvalue)
            rows.append({"dataset": dataset, "model": model, "strategy": strategy, "metric": metric,
                         "n_pairs": n, "mean_difference": mean, "ci95": half, "p_value": p_value})
    columns = ["dataset", "model", "strategy", "metric", "n_pairs", "mean_difference", "ci95", "p_value"]
    return pd.DataFrame(rows, columns=columns)  # the columns exist even with only the baseline
