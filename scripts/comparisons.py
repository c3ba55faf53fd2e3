"""Configurations against a reference on the same test images: paired bootstrap
differences with Holm-adjusted p-values.

* :func:`versus_baseline`: every configuration minus the scratch CNN baseline
  (:data:`BASELINE`) at the same training fraction;
* :func:`versus_random_init`: every pretraining source minus random init for the same
  backbone, strategy and fraction.

Both pair the seeds the two configurations share (the same split) and resample the test
images once per dataset (:class:`scripts.stats.SharedBootstrap`); the Holm family is
each dataset × fraction × metric.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from scripts import stats as st
from scripts.grid import PRETRAINED_STRATEGIES, RANDOM_INIT
from scripts.models import SCRATCH_CNN
from scripts.run_tables import CONFIG, config_key

BASELINE = {"model": SCRATCH_CNN, "strategy": "scratch", "weights": RANDOM_INIT}
COMPARISON_COLUMNS = [*CONFIG, "metric", "n_pairs", "difference", "low", "high", "p_value", "p_holm"]


class Resampled(NamedTuple):
    """One configuration's metric on a dataset's shared test resamples."""
    by_seed: dict  # seed -> test probabilities
    values: np.ndarray  # the metric, averaged over the seeds, on every resample
    estimate: float  # the metric, averaged over the seeds, on the whole test set


def is_baseline(config: dict) -> bool:
    return config["model"] == BASELINE["model"] and config["strategy"] == BASELINE["strategy"]


def versus_baseline(summary: list[dict], resampled: dict, metrics: list[str],
                    bootstrap: st.SharedBootstrap) -> list[dict]:
    """Each configuration minus the baseline (same dataset and fraction). ``resampled``:
    a :class:`Resampled` per (configuration key, metric)."""
    rows = []
    for config in summary:
        if not is_baseline(config):
            rows += paired(config, {**config, **BASELINE}, resampled, metrics, bootstrap)
    return with_holm(rows)


def versus_random_init(summary: list[dict], resampled: dict, metrics: list[str],
                       bootstrap: st.SharedBootstrap) -> list[dict]:
    """Each pretraining source minus random init for the same backbone, strategy and fraction."""
    rows = []
    for config in summary:
        if config["strategy"] in PRETRAINED_STRATEGIES and config["weights"] != RANDOM_INIT:
            rows += paired(config, {**config, "weights": RANDOM_INIT}, resampled, metrics, bootstrap)
    return with_holm(rows)


def paired(config: dict, reference: dict, resampled: dict, metrics: list[str],
           bootstrap: st.SharedBootstrap) -> list[dict]:
    """``config`` minus ``reference`` per metric on the same test resamples; the seeds the
    two share are paired (same split), the rest left out. Empty when the reference did not run."""
    key, reference_key = config_key(config), config_key(reference)
    if (reference_key, metrics[0]) not in resampled:
        return []
    rows = []
    for metric in metrics:
        seeds_a, values_a, estimate_a = resampled[key, metric]
        seeds_b, values_b, estimate_b = resampled[reference_key, metric]
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


def with_holm(rows: list[dict]) -> list[dict]:
    """``rows`` with Holm-adjusted p-values within each dataset × fraction × metric."""
    frame = pd.DataFrame(rows, columns=COMPARISON_COLUMNS[:-1])
    frame["p_holm"] = np.nan
    for _, family in frame.groupby(["dataset", "fraction", "metric"]):
        frame.loc[family.index, "p_holm"] = st.holm(family["p_value"])
    return frame.to_dict("records")
