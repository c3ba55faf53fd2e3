"""The report's section of what to deploy: the ensembles, the operating point and the
decision curve that :mod:`scripts.stats.deployment` computed, as the template shows them."""

from __future__ import annotations

import pandas as pd

from scripts.report import plots
from scripts.report.tables import of_dataset
from scripts.stats.deployment import DECISION_TABLES


def report_section(name: str, tables: dict, verdict: dict) -> dict | None:
    """The ensembles, the operating point and the decision curve of dataset ``name`` as the
    template shows them (None when the aggregate stage has none)."""
    info = verdict.get("decision")
    if not info:
        return None
    ensembles, operating, curve = (of_dataset(tables.get(table, pd.DataFrame()), name) for table in DECISION_TABLES)
    rows = [{"name": ensemble, **{k: group.iloc[0][k] for k in ("kind", "members", "n_runs", "val_value", "n_val")},
             "best": bool(group["best"].astype(str).eq("True").any()),
             "cells": {r["metric"]: r for r in group.to_dict("records")}}
            for ensemble, group in ensembles.groupby("ensemble", sort=False)] if len(ensembles) else []
    points = [{"deployed": deployed, **group.iloc[0][["name", "threshold", "thresholds", "chosen_on",
                                                       "n_val_positives", "val_sensitivity", "val_specificity",
                                                       "new_sensitivity", "new_sensitivity_low"]].to_dict(),
               "cells": {f"{r['measure']}@{r['prevalence_of']}": r for r in group.to_dict("records")}}
              for deployed, group in operating.groupby("deployed", sort=False)] if len(operating) else []
    return {**info, "ensembles": rows, "operating_point": points,
            "figure": decision_curve_figure(curve) if len(curve) else None}


CURVE_STYLE = {"treat all": {"color": "#888888", "linestyle": "--"},
               "treat none": {"color": "black", "linestyle": ":"}}
PANEL_TITLES = {"test": "at the test prevalence", "set": "at the set prevalence"}


def decision_curve_figure(curve: pd.DataFrame) -> str:
    """Net benefit against threshold probability, one line per strategy and its 95% band over
    the test images (shaded), one panel per prevalence (the test set's, and the one set); the
    y axis from a little below zero to a little above the largest net benefit (treat-all falls
    fast)."""
    if "prevalence_of" not in curve:
        curve = curve.assign(prevalence_of="test")
    panels = list(curve.groupby("prevalence_of", sort=False))
    figure, axes = plots.plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 4.0), squeeze=False)
    top = float(curve["net_benefit"].max())
    for ax, (prevalence_of, panel) in zip(axes[0], panels, strict=True):
        for strategy, points in panel.groupby("strategy", sort=False):
            (line,) = ax.plot(points["threshold"], points["net_benefit"], label=strategy,
                              **CURVE_STYLE.get(strategy, {}))
            if strategy not in CURVE_STYLE and {"low", "high"} <= set(points):
                ax.fill_between(points["threshold"], points["low"], points["high"], color=line.get_color(),
                                alpha=0.15, linewidth=0)
        ax.set_ylim(-0.05 * max(top, 0.01) - 0.02, top * 1.1 + 0.01)
        prevalence = f" ({panel['prevalence'].iloc[0]:.3f})" if "prevalence" in panel else ""
        ax.set_title(PANEL_TITLES.get(prevalence_of, prevalence_of) + prevalence, fontsize=9)
        ax.set_xlabel("threshold probability")
        ax.set_ylabel("net benefit")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2))  # below: the curves fill the top
    return plots.to_data_uri(figure)
