"""Configurations against a reference on the same test images and seeds: paired two-way
bootstrap differences (seeds and test images drawn, :mod:`scripts.stats.stats`) with p-values
adjusted within a named family (:data:`FAMILIES`).

* :func:`versus_baseline`: every configuration minus the scratch CNN baseline
  (:data:`BASELINE`) at the same training fraction. The validation-chosen configuration's
  comparison in the selection metric is fixed before the test set is read: it is reported
  on its own (family ``prespecified``, not adjusted); the others form the ``baseline``
  family, Holm-adjusted per :data:`HOLM_FAMILY`;
* :func:`versus_random_init`: every pretraining source minus random init for the same
  backbone, strategy and fraction (family ``pretraining``).

Both pair the seeds the two configurations share (the same split) and draw them, and the
test images, once per dataset (:class:`scripts.stats.stats.SharedBootstrap`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from scripts.plan.grid import PRETRAINED_STRATEGIES, RANDOM_INIT, SCRATCH, SCRATCH_CNN
from scripts.stats import stats as st
from scripts.stats.run_tables import CONFIG, config_key

BASELINE = {"model": SCRATCH_CNN, "strategy": SCRATCH, "weights": RANDOM_INIT}
SIGNIFICANCE = 0.05
HOLM_FAMILY = ("dataset", "fraction", "metric")  # the columns whose values make one Holm family
FAMILIES = {
    "prespecified": "the configuration chosen on validation against the scratch CNN baseline, in the selection "
                    "metric at the largest training fraction: one comparison fixed before the test set is read, "
                    "reported on its own and not adjusted",
    "baseline": "every other configuration against the scratch CNN baseline on the same dataset, training fraction "
                "and metric (the prespecified comparison left out)",
    "pretraining": "every pretraining source against random init on the same dataset, training fraction and metric",
}
COMPARISON_COLUMNS = [*CONFIG, "metric", "n_pairs", "difference", "low", "high", "p_value", "p_holm", "family",
                      "family_size"]


class Resampled(NamedTuple):
    """One configuration's metric on a dataset's shared test resamples, per seed."""
    seeds: tuple  # its seeds, in the order of the rows below
    per_seed: np.ndarray  # (seeds, B): each seed's metric on every image resample
    per_seed_estimate: np.ndarray  # (seeds,): each seed's metric on the whole test set


def is_baseline(config: dict) -> bool:
    return config["model"] == BASELINE["model"] and config["strategy"] == BASELINE["strategy"]


def versus_baseline(summary: list[dict], resampled: dict, metrics: list[str], bootstrap: st.SharedBootstrap,
                    prespecified: tuple | None = None) -> list[dict]:
    """Each configuration minus the baseline (same dataset and fraction). ``resampled``:
    a :class:`Resampled` per (configuration key, metric); ``prespecified``: the
    (configuration key, metric) of the comparison fixed in advance, or None."""
    rows = []
    for config in summary:
        if not is_baseline(config):
            rows += paired(config, {**config, **BASELINE}, resampled, metrics, bootstrap)
    return with_holm(rows, "baseline", prespecified)


def versus_random_init(summary: list[dict], resampled: dict, metrics: list[str],
                       bootstrap: st.SharedBootstrap) -> list[dict]:
    """Each pretraining source minus random init for the same backbone, strategy and fraction."""
    rows = []
    for config in summary:
        if _pretrained(config):
            rows += paired(config, {**config, "weights": RANDOM_INIT}, resampled, metrics, bootstrap)
    return with_holm(rows, "pretraining")


def _pretrained(config: dict) -> bool:
    return config["strategy"] in PRETRAINED_STRATEGIES and config["weights"] != RANDOM_INIT


def largest_family(configs: list[dict]) -> int:
    """The most comparisons one Holm family can hold among ``configs`` (one dataset's
    configurations: :data:`CONFIG` keys), counting every configuration whose reference ran."""
    keys = {config_key(c) for c in configs}
    sizes = [0]
    for fraction in {c["fraction"] for c in configs}:
        at = [c for c in configs if c["fraction"] == fraction]
        if any(is_baseline(c) for c in at):
            sizes.append(sum(not is_baseline(c) for c in at))
        sizes.append(sum(_pretrained(c) and config_key({**c, "weights": RANDOM_INIT}) in keys for c in at))
    return max(sizes)


def paired(config: dict, reference: dict, resampled: dict, metrics: list[str],
           bootstrap: st.SharedBootstrap) -> list[dict]:
    """``config`` minus ``reference`` per metric: the seeds the two share are paired (same
    split) and drawn with replacement, the test images resampled, both on the same draws;
    seeds only one of them has are left out. Empty when the reference did not run."""
    key, reference_key = config_key(config), config_key(reference)
    if (reference_key, metrics[0]) not in resampled:
        return []
    rows = []
    for metric in metrics:
        a, b = resampled[key, metric], resampled[reference_key, metric]
        common = sorted(set(a.seeds) & set(b.seeds))
        if not common:
            continue
        rows_a = [a.seeds.index(s) for s in common]
        rows_b = [b.seeds.index(s) for s in common]
        values = bootstrap.over_seeds_and_images(a.per_seed[rows_a] - b.per_seed[rows_b])
        low, high = np.percentile(values, [2.5, 97.5])
        rows.append({**{k: config[k] for k in CONFIG}, "metric": metric, "n_pairs": len(common),
                     "difference": float(a.per_seed_estimate[rows_a].mean() - b.per_seed_estimate[rows_b].mean()),
                     "low": float(low), "high": float(high), "p_value": st.bootstrap_p_value(values)})
    return rows


def with_holm(rows: list[dict], family: str, prespecified: tuple | None = None) -> list[dict]:
    """``rows`` with p-values adjusted within their family: the ``prespecified`` comparison
    ((configuration key, metric)) alone and unadjusted, the others Holm-adjusted within each
    :data:`HOLM_FAMILY`."""
    frame = pd.DataFrame(rows, columns=COMPARISON_COLUMNS[:-3])
    alone = np.array([(config_key(row), row["metric"]) == prespecified for row in rows], dtype=bool)
    frame["p_holm"], frame["family"], frame["family_size"] = np.nan, family, 0
    if alone.any():
        frame.loc[alone, "p_holm"] = frame.loc[alone, "p_value"]
        frame.loc[alone, "family"] = "prespecified"
        frame.loc[alone, "family_size"] = 1
    for _, members in frame[~alone].groupby(list(HOLM_FAMILY)):
        frame.loc[members.index, "p_holm"] = st.holm(members["p_value"])
        frame.loc[members.index, "family_size"] = int(members["p_value"].notna().sum())
    return frame.to_dict("records")
