"""Aggregation: CIs over seeds, paired comparisons, missing runs kept visible."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from scripts.aggregate import collect, mean_ci, paired_comparison, summarise


def test_mean_ci_is_the_t_interval():
    mean, half, n = mean_ci([0.7, 0.8, 0.9])
    assert (mean, n) == (pytest.approx(0.8), 3)
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3))
    assert np.isnan(mean_ci([0.5])[1])


def table(rows):
    base = {"dataset": "d", "status": "ok"}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_paired_comparison_matches_seeds():
    runs = table([
        {"model": "scratch_cnn", "strategy": "scratch", "seed": 1, "auc": 0.6},
        {"model": "scratch_cnn", "strategy": "scratch", "seed": 2, "auc": 0.7},
        {"model": "vgg16", "strategy": "full", "seed": 1, "auc": 0.8},
        {"model": "vgg16", "strategy": "full", "seed": 2, "auc": 0.95},
        {"model": "vgg16", "strategy": "full", "seed": 3, "auc": 0.1},  # no baseline seed 3
    ])
    result = paired_comparison(runs, "auc").iloc[0]
    assert result["n_pairs"] == 2
    assert result["mean_difference"] == pytest.approx(0.225)
    assert result["p_value"] == pytest.approx(stats.ttest_rel([0.8, 0.95], [0.6, 0.7]).pvalue)


def test_paired_comparison_of_the_baseline_alone_is_empty_with_columns():
    runs = table([{"model": "scratch_cnn", "strategy": "scratch", "seed": 1, "auc": 0.6}])
    result = paired_comparison(runs, "auc")
    assert result.empty and {"model", "strategy", "n_pairs"} <= set(result.columns)


def test_missing_runs_are_listed_not_dropped(tmp_path):
    done = tmp_path / "results" / "d" / "runs" / "vgg16" / "full" / "seed1"
    done.mkdir(parents=True)
    (done / "train.json").write_text(json.dumps({"weights": {"source": "none"}, "train_seconds": 3}))
    (done / "metrics.json").write_text(json.dumps({"accuracy": 0.5, "f1_macro": 0.4}))
    runs = [{"dataset": "d", "model": "vgg16", "strategy": "full", "seed": s} for s in (1, 2)]
    frame = collect(runs, str(tmp_path / "results"))
    assert list(frame["status"]) == ["ok", "missing"]
    summary = summarise(frame)
    assert summary.iloc[0]["n_seeds"] == 1 and summary.iloc[0]["accuracy"] == 0.5


def test_report_intervals_stay_inside_the_metric_range():
    from scripts.report import interval

    assert interval(0.773, 1.428) == "[0.000, 1.000]"
    assert interval(0.5, 0.1, 2) == "[0.40, 0.60]"
    assert interval(0.5, float("nan")) == "n/a (one seed)"
