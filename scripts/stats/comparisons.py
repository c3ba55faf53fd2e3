"""Configurations against a reference on the same test images and seeds: paired differences
with a t-interval and p-value over seeds and test images (:func:`scripts.stats.stats.seeds_and_images`),
p-values adjusted within a named family (:data:`FAMILIES`), and per comparison the smallest
difference it could detect (80% power at the level its claim uses) and the seeds that would
detect ``evaluation.meaningful_difference``.

* :func:`versus_baseline`: every configuration minus the scratch CNN baseline
  (:data:`BASELINE`) at the same training fraction. The validation-chosen configuration's
  comparison in the selection metric is fixed before the test set is read: it is reported
  on its own (family ``prespecified``, not adjusted); the others form the ``baseline``
  family, Holm-adjusted per :data:`HOLM_FAMILY`;
* :func:`versus_random_init`: every pretraining source minus random init for the same
  backbone, strategy and fraction (family ``pretraining``).

Both pair the seeds the two configurations share (the same split) and resample the test images
once per dataset (:class:`scripts.stats.stats.SharedBootstrap`).
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
PAIRED_COLUMNS = [*CONFIG, "metric", "n_pairs", "difference", "low", "high", "p_value", "se", "df",
                  "seed_variance", "image_variance", "image_shared_variance"]
# alpha: the level the comparison's claim uses (SIGNIFICANCE alone; in a Holm family the
# threshold of its rank); detectable: the smallest difference detected with 80% power at that
# level; seeds_needed: the seeds that would detect the meaningful difference (inf: no number
# of seeds on this test set; NaN: no meaningful difference set)
COMPARISON_COLUMNS = [*PAIRED_COLUMNS, "p_holm", "family", "family_size", "alpha", "detectable", "seeds_needed"]


class Resampled(NamedTuple):
    """One configuration's metric on a dataset's shared test resamples, per seed."""
    seeds: tuple  # its seeds, in the order of the rows below
    per_seed: np.ndarray  # (seeds, B): each seed's metric on every image resample
    per_seed_estimate: np.ndarray  # (seeds,): each seed's metric on the whole test set


def is_baseline(config: dict) -> bool:
    return config["model"] == BASELINE["model"] and config["strategy"] == BASELINE["strategy"]


def versus_baseline(summary: list[dict], resampled: dict, metrics: list[str], bootstrap: st.SharedBootstrap,
                    prespecified: tuple | None = None, meaningful_difference: float | None = None) -> list[dict]:
    """Each configuration minus the baseline (same dataset and fraction). ``resampled``:
    a :class:`Resampled` per (configuration key, metric); ``prespecified``: the
    (configuration key, metric) of the comparison fixed in advance, or None;
    ``meaningful_difference``: the difference whose seeds needed are reported, or None."""
    rows = []
    for config in summary:
        if not is_baseline(config):
            rows += paired(config, {**config, **BASELINE}, resampled, metrics, bootstrap)
    return with_holm(rows, "baseline", prespecified, meaningful_difference)


def versus_random_init(summary: list[dict], resampled: dict, metrics: list[str], bootstrap: st.SharedBootstrap,
                       meaningful_difference: float | None = None) -> list[dict]:
    """Each pretraining source minus random init for the same backbone, strategy and fraction."""
    rows = []
    for config in summary:
        if _pretrained(config):
            rows += paired(config, {**config, "weights": RANDOM_INIT}, resampled, metrics, bootstrap)
    return with_holm(rows, "pretraining", meaningful_difference=meaningful_difference)


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
    split), the per-seed differences on the whole test set and on the same image resamples
    give the interval and p-value (:func:`scripts.stats.stats.seeds_and_images`); seeds only
    one of them has are left out. Empty when the reference did not run."""
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
        result = bootstrap.seeds_and_images(a.per_seed[rows_a] - b.per_seed[rows_b],
                                            a.per_seed_estimate[rows_a] - b.per_seed_estimate[rows_b])
        rows.append({**{k: config[k] for k in CONFIG}, "metric": metric, "n_pairs": len(common),
                     "difference": result["estimate"],
                     **{k: result[k] for k in ("low", "high", "p_value", "se", "df", "seed_variance",
                                               "image_variance", "image_shared_variance")}})
    return rows


def with_holm(rows: list[dict], family: str, prespecified: tuple | None = None,
              meaningful_difference: float | None = None) -> list[dict]:
    """``rows`` with p-values adjusted within their family: the ``prespecified`` comparison
    ((configuration key, metric)) alone and unadjusted, the others Holm-adjusted within each
    :data:`HOLM_FAMILY`; and what each could detect (:func:`with_power`)."""
    frame = pd.DataFrame(rows, columns=PAIRED_COLUMNS)
    alone = np.array([(config_key(row), row["metric"]) == prespecified for row in rows], dtype=bool)
    frame["p_holm"], frame["family"], frame["family_size"], frame["alpha"] = np.nan, family, 0, np.nan
    if alone.any():
        frame.loc[alone, "p_holm"] = frame.loc[alone, "p_value"]
        frame.loc[alone, "family"] = "prespecified"
        frame.loc[alone, "family_size"] = 1
        frame.loc[alone, "alpha"] = SIGNIFICANCE
    for _, members in frame[~alone].groupby(list(HOLM_FAMILY)):
        frame.loc[members.index, "p_holm"] = st.holm(members["p_value"])
        frame.loc[members.index, "family_size"] = int(members["p_value"].notna().sum())
        frame.loc[members.index, "alpha"] = holm_levels(members["p_value"])
    return [with_power(row, meaningful_difference) for row in frame.to_dict("records")]


def holm_levels(p_values: pd.Series) -> np.ndarray:
    """The level Holm's step-down procedure tests each p-value at: SIGNIFICANCE / (m - r + 1)
    for the r-th smallest of m (ties in input order; a missing p-value is tested at the
    strictest level, SIGNIFICANCE / m)."""
    p = p_values.to_numpy(dtype=float)
    m = int((~np.isnan(p)).sum())
    levels = np.full(len(p), SIGNIFICANCE / max(m, 1))
    order = np.argsort(np.where(np.isnan(p), np.inf, p), kind="stable")[:m]
    levels[order] = SIGNIFICANCE / (m - np.arange(m))
    return levels


def with_power(row: dict, meaningful_difference: float | None) -> dict:
    """``row`` with ``detectable``, the smallest difference its test detects with 80% power at
    its ``alpha`` given the observed seed and image variance, and ``seeds_needed``, the seeds
    at which it would detect ``meaningful_difference`` (NaN without one)."""
    seed_variance, shared, alpha = row["seed_variance"], row["image_shared_variance"], row["alpha"]
    detectable = st.detectable_difference(seed_variance, shared, row["n_pairs"], alpha)
    needed = (st.seeds_to_detect(meaningful_difference, seed_variance, shared, alpha)
              if meaningful_difference is not None else np.nan)
    return {**row, "detectable": detectable, "seeds_needed": needed}
