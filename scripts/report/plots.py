"""Matplotlib figures for the report, returned as self-contained ``data:`` URIs."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch
from sklearn import metrics as skm

from scripts.plan.grid import SCRATCH, SCRATCH_CNN, STRATEGIES
from scripts.stats.comparisons import BASELINE

UNTRAINED_COLOUR = "#dcdcdc"  # bars of runs without pretrained weights: no source colour
PANELS_PER_ROW = 5  # models side by side in "Metric by strategy"


def to_data_uri(figure) -> str:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def jpeg_data_uri(rgb: np.ndarray, quality: int = 85) -> str:
    """Photos (X-rays, overlays) as JPEG: a tenth of the PNG size in the report."""
    import cv2

    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def _grid(n_panels: int, columns: int = 4, size: float = 2.8):
    rows = max(1, -(-n_panels // columns))
    cols = min(columns, max(1, n_panels))
    figure, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return figure, list(axes.flat)


def metric_by_strategy(table, metric: str, label: str):
    """One panel per model: the metric of every seed (points) and the mean (bar) per
    strategy, at the largest training fraction. With several pretraining sources the
    strategy's bars stand side by side, one colour per source (legend above); the
    x axis names strategies only, so its labels stay apart at any number of sources."""
    table = table[table["fraction"] == table["fraction"].max()]
    sources = sorted(table.loc[table["strategy"] != SCRATCH, "weights"].unique())
    several_sources = len(sources) > 1
    colours = dict(zip(sources, plt.cm.Pastel1.colors if several_sources else ["#cfd8e3"], strict=False))
    models = sorted(table["model"].unique())
    strategies = {model: [s for s in STRATEGIES if (table.loc[table["model"] == model, "strategy"] == s).any()]
                  for model in models}
    # Each strategy gets a slot wide enough for its horizontal label ("linear_probe" at
    # 8 pt) and its bars side by side; panels share the figure in proportion.
    # Rows of at most PANELS_PER_ROW models: a wider figure, scaled to the report's column,
    # would shrink its text below reading size. A shorter row keeps the panels' scale, its
    # spare width left empty.
    slot_inches = max(0.95, 0.25 * len(sources) + 0.35)
    inches = {model: slot_inches * max(len(strategies[model]), 1) + 0.6 for model in models}
    rows = [models[i:i + PANELS_PER_ROW] for i in range(0, len(models), PANELS_PER_ROW)]
    figure_inches = max(sum(inches[model] for model in row) for row in rows)
    figure = plt.figure(figsize=(figure_inches, 2.8 * len(rows)))
    axes, first_of_row = [], []
    for row_spec, row in zip(figure.add_gridspec(len(rows), 1), rows, strict=True):
        ratios = [inches[model] for model in row]
        spare = figure_inches - sum(ratios)
        row_grid = row_spec.subgridspec(1, len(row) + (spare > 0.01), width_ratios=ratios + [spare] * (spare > 0.01))
        first_of_row.append(len(axes))
        axes += [figure.add_subplot(row_grid[0, i]) for i in range(len(row))]
    width = 0.7 / max(len(sources), 1)
    for ax, model in zip(axes, models, strict=False):
        runs = table[table["model"] == model]
        for x, strategy in enumerate(strategies[model]):
            present = sorted(runs.loc[runs["strategy"] == strategy, "weights"].unique())
            for number, weights in enumerate(present):
                centre = x + (number - (len(present) - 1) / 2) * width
                chosen = (runs["strategy"] == strategy) & (runs["weights"] == weights)
                values = runs.loc[chosen, metric].dropna().to_numpy(dtype=float)
                jitter = np.linspace(-0.2, 0.2, len(values)) * width if len(values) > 1 else [0]
                ax.bar(centre, values.mean() if len(values) else 0, width=width * 0.9,
                       color=colours.get(weights, UNTRAINED_COLOUR), edgecolor="#8a9bb0", lw=0.5)
                ax.scatter(centre + np.asarray(jitter), values, color="#1f4e79", s=14, zorder=3)
        ax.set_xticks(range(len(strategies[model])), strategies[model], fontsize=8)
        ax.set_xlim(-0.6, len(strategies[model]) - 0.4)
        ax.set_ylim(0, 1)
        ax.set_title(model, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    for first in first_of_row:
        axes[first].set_ylabel(label)
    if several_sources:
        handles = [Patch(facecolor=colours[s], edgecolor="#8a9bb0", label=s) for s in sources]
        figure.legend(handles=handles, title="pretraining", fontsize=8, title_fontsize=8, loc="lower center",
                      ncol=len(sources), bbox_to_anchor=(0.5, 1.0))
    return to_data_uri(figure)


def curve_grid(runs: list[dict], classes: list[str], kind: str, positive: int | None = None):
    """ROC or precision-recall curves, one panel per configuration: of the positive
    class for two-class data, one-vs-rest per class otherwise."""
    figure, axes = _grid(len(runs))
    targets = [positive] if positive is not None else range(len(classes))
    colours = plt.cm.tab10.colors
    for ax, run in zip(axes, runs, strict=False):
        for seed_index, (y_true, probs) in enumerate(run["predictions"]):
            for c in targets:
                positive = y_true == c
                if positive.all() or not positive.any():
                    continue
                if kind == "roc":
                    x, y, _ = skm.roc_curve(positive, probs[:, c])
                else:
                    y, x, _ = skm.precision_recall_curve(positive, probs[:, c])
                ax.plot(x, y, color=colours[c % 10], alpha=0.85, lw=1.2,
                        label=classes[c] if seed_index == 0 else None)
        if kind == "roc":
            ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.set_title(run["title"], fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("false positive rate" if kind == "roc" else "recall", fontsize=8)
        ax.set_ylabel("true positive rate" if kind == "roc" else "precision", fontsize=8)
    if runs:
        axes[0].legend(fontsize=7, loc="lower right")
    return to_data_uri(figure)


def confusion_grid(runs: list[dict], classes: list[str]):
    """Confusion matrices summed over seeds, shaded by row (recall), counts printed."""
    figure, axes = _grid(len(runs))
    for ax, run in zip(axes, runs, strict=False):
        matrix = np.sum(run["confusion"], axis=0)
        normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, int(count), ha="center", va="center", fontsize=8,
                    color="white" if normalised[i, j] > 0.6 else "black")
        short = [c[:10] for c in classes]
        ax.set_xticks(range(len(classes)), short, rotation=45, fontsize=7)
        ax.set_yticks(range(len(classes)), short, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(run["title"], fontsize=9)
    return to_data_uri(figure)


def history_grid(runs: list[dict], metric: str):
    """Training (solid) and validation (dashed) curves per seed, one panel per model × strategy."""
    figure, axes = _grid(len(runs))
    colours = plt.cm.tab10.colors
    for ax, run in zip(axes, runs, strict=False):
        for i, (seed, history) in enumerate(run["histories"]):
            colour = colours[i % 10]
            ax.plot(history["epoch"], history[metric], color=colour, lw=1.2, marker=".", label=f"seed {seed}")
            ax.plot(history["epoch"], history[f"val_{metric}"], color=colour, lw=1.2, ls="--", marker=".")
            switch = history.loc[history["phase"] == "finetune", "epoch"]
            if len(switch):
                ax.axvline(switch.iloc[0] - 0.5, color="grey", lw=0.8, ls=":")
        ax.set_title(run["title"], fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel(f"class-weighted {metric}", fontsize=8)
        if metric == "accuracy":
            ax.set_ylim(0, 1)
    if runs:
        axes[0].legend(fontsize=7)
    return to_data_uri(figure)


def _source_label(strategy: str, weights: str) -> str:
    return strategy if strategy == SCRATCH else f"{strategy} ({weights})"


def learning_curve(curve, label: str, validation: dict | None = None):
    """The test metric against the number of training images, one panel per backbone, a
    line per strategy × pretraining with its 95% interval over test images (band); the
    scratch CNN baseline (grey, dashed) in every panel. Filled markers: beats the baseline
    at that size (``beats``: :data:`scripts.stats.verdict.BEATS_RULE`), hollow: no such claim or not compared.
    ``validation`` (:func:`scripts.report.view.validation_pool`): the validation images every size
    also uses, named in the axis label."""
    is_baseline = (curve["model"] == BASELINE["model"]) & (curve["strategy"] == BASELINE["strategy"])
    baseline = curve[is_baseline].sort_values("n_train")
    models = sorted(set(curve["model"]) - {SCRATCH_CNN}) or [SCRATCH_CNN]
    figure, axes = _grid(len(models), columns=min(3, len(models)), size=3.6)
    colours = plt.cm.tab10.colors
    for ax, model in zip(axes, models, strict=False):
        if len(baseline):
            ax.plot(baseline["n_train"], baseline["value"], color="grey", ls="--", marker="s", ms=4,
                    label=f"{SCRATCH_CNN} (baseline)")
            ax.fill_between(baseline["n_train"], baseline["test_low"], baseline["test_high"], color="grey",
                            alpha=0.15)
        runs = curve[curve["model"] == model]
        groups = sorted(runs.groupby(["strategy", "weights"]).groups,
                        key=lambda key: (STRATEGIES.index(key[0]), key[1]))
        for number, (strategy, weights) in enumerate(groups if model != SCRATCH_CNN else []):
            line = runs[(runs["strategy"] == strategy) & (runs["weights"] == weights)].sort_values("n_train")
            colour = colours[number % 10]
            ax.plot(line["n_train"], line["value"], color=colour, lw=1.4, label=_source_label(strategy, weights))
            ax.fill_between(line["n_train"], line["test_low"], line["test_high"], color=colour, alpha=0.15)
            wins = line["beats"].eq(True)  # None: not compared
            ax.scatter(line["n_train"][wins], line["value"][wins], color=colour, s=30, zorder=3)
            ax.scatter(line["n_train"][~wins], line["value"][~wins], facecolor="white", edgecolor=colour, s=30,
                       zorder=3)
        ax.set_xscale("log")
        sizes = sorted(set(curve["n_train"].round()))
        ax.set_xticks(sizes, [f"{n:.0f}" for n in sizes])
        ax.minorticks_off()
        ax.set_ylim(0, 1)
        ax.set_xlabel("training images (mean over seeds)" + (
            f"\n+ {validation['images']} validation images ({validation['share']:.0%} of the pool) at every size"
            if validation else ""), fontsize=8)
        ax.set_ylabel(f"test {label}", fontsize=8)
        ax.set_title(model, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return to_data_uri(figure)


def reliability_grid(panels: list[dict]):
    """Reliability diagrams, one panel per configuration (``title``, ``before``, ``after``
    bins): the accuracy of each confidence bin (bars, before temperature scaling; orange
    dots, after) against the diagonal of perfect calibration; empty bins are left out."""
    figure, axes = _grid(len(panels))
    for ax, panel in zip(axes, panels, strict=False):
        bins = [b for b in panel["before"] if b["count"]]
        ax.bar([(b["low"] + b["high"]) / 2 for b in bins], [b["accuracy"] for b in bins],
               width=[b["high"] - b["low"] for b in bins], color="#9ec5e8", edgecolor="#1f4e79", lw=0.6,
               label="accuracy per bin")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        if panel["after"]:
            after = [b for b in panel["after"] if b["count"]]
            ax.plot([b["confidence"] for b in after], [b["accuracy"] for b in after], "o", color="#d68a00", ms=4,
                    label="after temperature scaling")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top label)", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
        ax.set_title(panel["title"], fontsize=9)
    if panels:
        handles, labels = axes[0].get_legend_handles_labels()
        figure.legend(handles, labels, fontsize=8, loc="lower center", ncol=2, bbox_to_anchor=(0.5, 1.0))
    return to_data_uri(figure)


def mean_heatmap_grid(panels: list[dict], box: list[float]):
    """Per configuration (``title``, ``cam`` = mean Grad-CAM map of its first seed's test
    images, ``score``) the map over the image frame with the lung box drawn in."""
    from matplotlib.patches import Rectangle

    figure, axes = _grid(len(panels), size=2.4)
    left, top, right, bottom = box
    for ax, panel in zip(axes, panels, strict=False):
        ax.imshow(panel["cam"], cmap="jet", vmin=0, extent=(0, 1, 1, 0), interpolation="nearest")
        ax.add_patch(Rectangle((left, top), right - left, bottom - top, fill=False, edgecolor="white", lw=1.5,
                               ls="--"))
        ax.set_xticks([])
        ax.set_yticks([])
        scored = panel["score"] is not None and not np.isnan(panel["score"])
        score = f"{panel['score']:.2f}" if scored else "– (no map had any mass)"
        ax.set_title(f"{panel['title']}\nscore {score} (mean over seeds)", fontsize=8)
    return to_data_uri(figure)
