"""The report's view model: per dataset, every section as the template shows it, built
from the aggregate tables (:mod:`scripts.report.tables`); the page's contents; and the
number formats the template and the warnings share. It computes no statistic."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from scripts.plan import grid
from scripts.plan.config import leaves
from scripts.plan.grid import SCRATCH, STRATEGIES, config_title, report_order
from scripts.report import plots
from scripts.report.deployment import report_section as deployment_section
from scripts.report.tables import (
    CURVE_SEEDS,
    leakage_section,
    load_configs,
    of_dataset,
    read_optional_json,
    records,
    split_counts,
)
from scripts.stats.aggregate import INTERNAL_MAPPED
from scripts.stats.evaluation import positive_index
from scripts.stats.stats import SLOPE_SE_LIMIT, TEMPERATURE_BOUNDS
from scripts.stats.verdict import TOO_FEW_SEEDS
from scripts.train import gradcam

LABELS = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "f1_macro": "Macro-F1",
          "auc": "AUC-ROC", "sensitivity": "Sensitivity", "specificity": "Specificity",
          "recall_macro": "Recall (macro, one-vs-rest)", "specificity_macro": "Specificity (macro, one-vs-rest)",
          "precision_macro": "Precision (macro)"}


def choose_gradcam_images(configs: list[dict], classes: list[str], per_class: int) -> list[str]:
    """The same test images for every row: per class, the image most often misclassified
    across configurations first, then the most often correct (ties by path)."""
    if not configs:
        return []
    tables = [c["table"] for c in configs]
    correct = sum((t["label"] == t["predicted"]).astype(int) for t in tables)
    frame = pd.DataFrame({"label": tables[0]["label"], "correct": correct}).reset_index()
    chosen = []
    for label in classes:
        rows = frame[frame["label"] == label].sort_values(["correct", "path"])
        if rows.empty:
            continue
        hardest = rows.head(1) if rows["correct"].iloc[0] < len(tables) else rows.head(0)
        easiest = rows.sort_values(["correct", "path"], ascending=[False, True])
        picks = list(hardest["path"]) + [p for p in easiest["path"] if p not in set(hardest["path"])]
        chosen += picks[:per_class]
    return chosen


def explained_layers(configs: list[dict]) -> list[dict]:
    """Per model, the layer its Grad-CAM maps explain and their cells (``HxW``)."""
    layers = set()
    for config in configs:
        if config["cams"]:
            height, width = next(iter(config["cams"].values())).shape
            layers.add((config["key"]["model"], config["cam_layer"], f"{height}x{width}"))
    return [{"model": model, "layer": layer, "cells": cells} for model, layer, cells in sorted(layers)]


def gradcam_panel(thumbnails: dict, configs: list[dict], paths: list[str], min_cells: int) -> dict:
    """The grid of Grad-CAM overlays (a row per configuration, a column per image in
    ``paths``) and the layer each model explains, chosen by ``min_cells``."""
    rows = []
    for config in configs:
        cells = []
        for path in paths:
            pred = config["table"].loc[path]
            cells.append({
                "image": plots.jpeg_data_uri(gradcam.overlay(thumbnails[path], config["cams"][path])),
                "true": pred["label"], "predicted": pred["predicted"],
                "probability": float(pred[f"p_{pred['predicted']}"]),
                "correct": pred["label"] == pred["predicted"],
            })
        rows.append({"title": config["title"], "seed": int(config["cam_seed"]), "cells": cells})
    columns = [{"path": p, "image": plots.jpeg_data_uri(thumbnails[p])} for p in paths]
    return {"columns": columns, "rows": rows, "layers": explained_layers(configs), "min_cells": min_cells}


def sample_predictions(thumbnails: dict, config: dict, per_class: int = 4) -> list[dict]:
    table = config["table"].reset_index()
    picks = table.groupby("label", sort=True).head(per_class)
    return [{
        "image": plots.jpeg_data_uri(thumbnails[row["path"]]),
        "path": row["path"], "true": row["label"], "predicted": row["predicted"],
        "probability": float(row[f"p_{row['predicted']}"]),
        "correct": row["label"] == row["predicted"],
    } for _, row in picks.iterrows()]


def comparison_rows(comparisons: pd.DataFrame) -> list[dict]:
    """One row per configuration, one cell (difference, interval, Holm p) per metric."""
    rows = []
    for _, group in comparisons.groupby(["model", "strategy", "weights", "fraction"], sort=False):
        first = group.iloc[0]
        rows.append({"title": config_title(first), "cells": {r["metric"]: r for r in records(group)}})
    return rows


def validation_pool(split: dict) -> dict | None:
    """The validation images of the first seed's split (:func:`split_counts`) and their
    share of the training pool (train + validation): held out before the training fractions
    are drawn, the same at every fraction. None without the split."""
    counts = split["counts"]
    n_val, n_train = sum(counts.get("val", {}).values()), sum(counts.get("train", {}).values())
    if not n_val + n_train:
        return None
    return {"images": n_val, "pool": n_val + n_train, "share": n_val / (n_val + n_train)}


def learning_section(name: str, tables: dict, verdict: dict, split: dict) -> dict | None:
    """How much labelled data: the curve, its table and one statement per pretrained
    configuration (None with a single training fraction); ``split``: the first seed's
    :func:`split_counts`, for the validation images every fraction also uses."""
    info = verdict.get("learning_curve")
    curve = of_dataset(tables["learning_curve"], name)
    if not info or len(info["fractions"]) < 2 or curve.empty:
        return None
    rows = sorted(records(curve), key=lambda row: (*report_order(row)[:4], float(row["fraction"])))
    validation = validation_pool(split)
    figure = plots.learning_curve(curve, LABELS[info["metric"]], validation)
    return {"metric": info["metric"], "rule": info["rule"], "figure": figure, "min_seeds": TOO_FEW_SEEDS,
            "validation": validation,
            "rows": [{**row, "title": config_title(row, with_fraction=False)} for row in rows],
            "statements": [{**s, "title": config_title(s, with_fraction=False)} for s in info["statements"]]}


def external_sections(name: str, tables: dict, verdict: dict) -> list[dict]:
    """Per external test set: its data checks, what was evaluated, every configuration's
    internal and external metrics side by side, and the chosen configuration's pair."""
    table = of_dataset(tables["external"], name)
    sections = []
    for external, info in verdict.get("external", {}).items():
        rows = table[table["external"] == external] if len(table) else table
        pairs = [{"title": config_title(row), "key": row, "external": row, "internal": internal_mapped(row)}
                 for row in records(rows)]
        chosen = verdict["chosen"]
        chosen_pair = next((p for p in pairs if chosen and all(str(p["key"][k]) == str(chosen[k]) for k in KEY)),
                           None)
        if info["missing"]:
            sections.append({**info, "name": external, "verify": read_optional_json(info["verify"])})
            continue
        sections.append({**info, "name": external, "verify": read_optional_json(info["verify"]),
                         "rows": sorted(pairs, key=lambda pair: report_order(pair["key"])), "chosen": chosen_pair,
                         "common": info["metrics"]})
    return sections


def internal_mapped(row: dict) -> dict:
    """An external table row's internal metrics (on the internal test set mapped by the
    external test's class map), keyed like the external ones."""
    return {key[len(INTERNAL_MAPPED):]: value for key, value in row.items() if key.startswith(INTERNAL_MAPPED)}


KEY = ("model", "strategy", "weights", "fraction")


def _ordered(summary: pd.DataFrame) -> list[dict]:
    return sorted(({**row, "title": config_title(row)} for row in records(summary)), key=report_order)


def calibration_section(summary: pd.DataFrame, verdict: dict) -> dict | None:
    rows = _ordered(summary)
    if not rows:
        return None
    panels = [{"title": row["title"], **json.loads(row["reliability"])} for row in rows]
    return {"rows": rows, "figure": plots.reliability_grid(panels), "temperature_bounds": TEMPERATURE_BOUNDS,
            "slope_se_limit": SLOPE_SE_LIMIT,
            **verdict["calibration"]}


def shortcut_section(summary: pd.DataFrame, verdict: dict, configs: list[dict]) -> dict | None:
    rows = _ordered(summary)
    if not rows:
        return None
    info = verdict["shortcut"]
    flagged = {tuple(str(f[k]) for k in KEY) for f in info["flagged"]}
    for row in rows:
        row["flagged"] = tuple(str(row[k]) for k in KEY) in flagged
        row["flag"] = shortcut_flag(row, row["flagged"])
    scores = {tuple(str(row[k]) for k in KEY): row["shortcut_score"] for row in rows}
    panels = [{"title": c["title"], "cam": np.mean([cam.astype(float) for cam in c["cams"].values()], axis=0),
               "score": scores.get(tuple(str(c["key"][k]) for k in KEY))} for c in configs if c.get("cams")]
    return {**info, "rows": rows, "uninformative": sorted({r["cam_cells"] for r in rows if not r["cam_informative"]}),
            "figure": plots.mean_heatmap_grid(panels, info["box"]) if panels else None}


def shortcut_flag(row: dict, flagged: bool) -> str:
    """What the shortcut table says of a configuration: ``flagged``, ``no score`` (no test
    image had a map with any mass: nothing was checked, so nothing is cleared),
    ``uninformative`` (maps too coarse to locate anything) or ``below``."""
    if flagged:
        return "flagged"
    if pd.isna(row["shortcut_above_uniform"]):
        return "no score"
    return "below" if row["cam_informative"] else "uninformative"


# What the built-in pretraining sources are; a named source says it in its config ``description``.
BUILT_IN_SOURCES = {grid.RANDOM_INIT: "random initialisation: not pretrained",
                    "imagenet": "Keras ImageNet weights",
                    grid.OWN_WEIGHTS: "a declared backbone file's own weights (backbones)"}


def source_descriptions(weights_setting) -> dict[str, str]:
    """Pretraining source name -> what its weights are, as the config states it."""
    items = weights_setting if isinstance(weights_setting, list) else [weights_setting]
    return {source["name"]: (item.get("description", "") if isinstance(item, dict) and "name" in item
                             else BUILT_IN_SOURCES.get(source["name"], ""))
            for item, source in zip(items, grid.weights_sources(weights_setting), strict=True)}


def weights_comparison_section(name: str, summary: pd.DataFrame, tables: dict, metric: str,
                               descriptions: dict[str, str]) -> dict | None:
    """Which pretraining: per backbone × strategy × fraction the test ``metric`` of each
    source (with what its weights are), and each source against random init (``none``)."""
    pretrained = summary[summary["strategy"] != SCRATCH] if len(summary) else summary
    sources = sorted(set(pretrained["weights"]) if len(pretrained) else set(), key=lambda w: (w != "none", w))
    if len(sources) < 2:
        return None
    versus = of_dataset(tables["weights_comparison"], name)
    by_key = {(*(str(row[k]) for k in KEY), row["metric"]): row for row in records(versus)}
    rows = []
    for (model, strategy, fraction), group in pretrained.groupby(["model", "strategy", "fraction"], sort=False):
        cells = {row["weights"]: row for row in records(group)}
        share = f" · {float(fraction):.0%} of train" if float(fraction) < 1 else ""
        versus_none = {w: by_key.get((model, strategy, w, str(fraction), metric)) for w in sources}
        rows.append({"title": f"{model} · {strategy}{share}", "model": model, "strategy": strategy,
                     "fraction": fraction, "cells": cells, "versus": versus_none})
    rows.sort(key=lambda r: (r["model"], STRATEGIES.index(r["strategy"]), -float(r["fraction"])))
    return {"sources": sources, "descriptions": {w: descriptions.get(w, BUILT_IN_SOURCES.get(w, "")) for w in sources},
            "metric": metric, "rows": rows,
            "comparisons": comparison_rows(versus) if len(versus) else []}


def dataset_section(name: str, plan: dict, tables: dict) -> dict:
    """Everything the template shows for one dataset; every key is always present."""
    paths = plan["datasets"][name]
    settings = plan["config"]
    verify = read_optional_json(paths["verify"])
    conversions = read_optional_json(paths["conversions"])
    verdict = tables["verdict"]["datasets"][name]
    runs = of_dataset(tables["runs"], name)
    done = runs[runs["status"] == "ok"] if len(runs) else runs
    summary = of_dataset(tables["summary"], name)
    classes = verdict.get("classes") or (verify["classes"] if verify else [])
    positive = settings["datasets"][name].get("positive_class")
    configs = load_configs(plan, done, classes) if len(done) else []
    thumbnails = {}
    if configs and Path(paths["thumbnails"]).exists():
        with np.load(paths["thumbnails"]) as saved:
            thumbnails = dict(zip(saved["paths"], saved["images"], strict=True))
    picked = choose_gradcam_images(configs, classes, settings["gradcam"]["images_per_class"])
    chosen = verdict["chosen"]
    chosen_config = next((c for c in configs if chosen and all(
        str(c["key"][k]) == str(chosen[k]) for k in ("model", "strategy", "weights"))
        and float(c["key"]["fraction"]) == float(chosen["fraction"])), None)
    comparisons = tables["comparisons"]
    selection = tables["verdict"]["selection_metric"]
    ordered = summary.sort_values(f"val_{selection}", ascending=False) if len(summary) else summary
    split = split_counts(paths["split"])
    return {
        "name": name,
        "classes": classes,
        "positive_class": positive,
        "verify": verify,
        "conversions": conversions,
        "split": split,
        "leakage": leakage_section(paths["leakage"], settings["data"]["leakage"]),
        "verdict": verdict,
        "metrics": verdict.get("metrics") or [],
        "summary": records(ordered),
        "comparisons": comparison_rows(of_dataset(comparisons, name)) if len(comparisons) else [],
        "missing": records(runs[runs["status"] != "ok"]) if len(runs) else [],
        "runs": records(runs.sort_values(["model", "strategy", "weights", "fraction", "seed"])),
        "figures": _figures(done, configs, classes, positive_index(classes, positive)) if configs else {},
        "gradcam": (gradcam_panel(thumbnails, configs, picked, settings["gradcam"]["min_cells"])
                    if picked and thumbnails else None),
        "samples": sample_predictions(thumbnails, chosen_config) if chosen_config and thumbnails else [],
        "chosen_title": chosen_config["title"] if chosen_config else None,
        "curve_seeds": CURVE_SEEDS,
        "learning": learning_section(name, tables, verdict, split),
        "external": external_sections(name, tables, verdict) if len(summary) else [],
        "calibration": calibration_section(summary, verdict) if len(summary) else None,
        "shortcut": shortcut_section(summary, verdict, configs) if len(summary) else None,
        "weights_comparison": weights_comparison_section(name, summary, tables, selection,
                                                         source_descriptions(settings["weights"])),
        "deployment": deployment_section(name, tables, verdict),
        "settings": {"val_fraction": settings["data"]["val_fraction"],
                     "min_val_per_class": settings["data"]["min_val_per_class"]},
    }


def _figures(done: pd.DataFrame, configs: list[dict], classes: list[str], positive: int | None) -> dict:
    return {
        "metric_f1": plots.metric_by_strategy(done, "f1_macro", "macro-F1"),
        "metric_auc": plots.metric_by_strategy(done, "auc", "AUC-ROC"),
        "roc": plots.curve_grid(configs, classes, "roc", positive),
        "pr": plots.curve_grid(configs, classes, "pr", positive),
        "confusion": plots.confusion_grid(configs, classes),
        "loss": plots.history_grid(configs, "loss"),
        "accuracy": plots.history_grid(configs, "accuracy"),
    }


def weights_table(runs: pd.DataFrame) -> list[dict]:
    """Backbone × pretraining source: where its weights came from (runs that used them)."""
    if runs.empty or "weights_source" not in runs:
        return []
    done = runs[(runs["status"] == "ok") & (runs["strategy"] != SCRATCH)]
    columns = ["model", "weights", "weights_source", "weights_sha256"]
    columns += ["weights_trust_on_first_use"] if "weights_trust_on_first_use" in runs else []
    return records(done[columns].drop_duplicates().sort_values(["model", "weights"]))


def configuration_section(plan: dict) -> dict:
    """The settings as run, each marked as set (by the study's config files or --config)
    or as the schema's default, and the whole config as YAML."""
    user_set = set(plan["settings"]["user_set"])
    return {
        "files": plan["settings"]["files"],
        "rows": [{"key": key, "value": value if isinstance(value, str) else json.dumps(value),
                  "user_set": key in user_set} for key, value in leaves(plan["config"])],
        "yaml": yaml.safe_dump(json.loads(json.dumps(plan["config"])), sort_keys=False),
    }


def not_pretrained(runs: pd.DataFrame) -> list[str]:
    """Backbones whose pretrained strategies ran only from random weights."""
    if runs.empty or "weights_source" not in runs:
        return []
    done = runs[(runs["status"] == "ok") & (runs["strategy"] != SCRATCH)]
    pretrained = set(done.loc[done["weights_source"] != "none", "model"])
    return sorted(set(done["model"]) - pretrained)


def number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def interval(low, high, digits: int = 3, bounded: bool = True, top: float = 1.0) -> str:
    """An interval as ``[low, high]``; "n/a" when it is undefined (e.g. one seed).
    ``bounded``: a metric's interval is clipped to its range [0, ``top``] (a t-interval from
    two seeds is often wider than the range); differences are not clipped."""
    if low is None or high is None or np.isnan(low) or np.isnan(high):
        return "n/a"
    if bounded:
        low, high = max(0.0, low), min(top, high)
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def detectable(comparison: dict, meaningful: float | None = None) -> str:
    """What a comparison could detect, for a reader of "no significant difference": the
    smallest difference its test detects with 80% power at the level its claim uses, and the
    seeds that would detect the ``meaningful`` difference where one is set. Empty where it
    is unknown (fewer than 2 seeds paired)."""
    smallest = comparison.get("detectable")
    if smallest is None or np.isnan(smallest):
        return ""
    text = (f"this study could detect differences ≥ {smallest:.3f} (80% power at α "
            f"{_significant(comparison['alpha'])})")
    needed = comparison.get("seeds_needed")
    if meaningful is None or needed is None or np.isnan(needed):
        return text
    if np.isinf(needed):
        return f"{text}; no number of seeds would detect {meaningful:g} on this test set: its test images limit it"
    return f"{text}; {needed:.0f} seeds would detect {meaningful:g}"


def _significant(alpha: float) -> str:
    """A level to two significant figures (0.05, 0.0083)."""
    return f"{alpha:.2g}"


KEPT_EPOCHS_LISTED = 10  # more seeds than this: the kept epochs are counted, not listed


def kept_epochs(text: str) -> str:
    """The kept epoch per seed (``"2 0 2"``) as written, or, with many seeds, each epoch
    with its number of seeds, most frequent first (``"2 ×153, 1 ×1"``): a cell stays one line."""
    epochs = str(text).split()
    if len(epochs) <= KEPT_EPOCHS_LISTED:
        return str(text)
    return ", ".join(f"{epoch} ×{count}" for epoch, count in collections.Counter(epochs).most_common())


# A dataset's sections in page order: (id prefix, title in the contents, the key of the dataset's
# section that must be non-empty for it to show; None: always shown). The template gives each
# heading the id ``<prefix>-<dataset index>``; tests/unit/test_report.py checks that every
# heading's id is in the contents.
DATASET_SECTIONS = (
    ("chosen", "verdict", None), ("configurations", "all configurations", "summary"),
    ("baseline", "against the baseline", "comparisons"), ("learning", "learning curve", "learning"),
    ("external", "external validation", "external"), ("calibration", "calibration", "calibration"),
    ("shortcut", "shortcut check", "shortcut"), ("weights-comparison", "which pretraining", "weights_comparison"),
    ("deployment", "what to deploy", "deployment"),
    ("by-strategy", "metric by strategy", "figures"), ("roc", "ROC", "figures"), ("pr", "precision–recall", "figures"),
    ("confusion", "confusion matrices", "figures"), ("training", "training curves", "figures"),
    ("gradcam", "Grad-CAM", "gradcam"), ("samples", "sample predictions", "samples"), ("data", "data checks", None),
    ("runs", "every run", "runs"),
)


# The study's sections after the datasets (the decision and the method come first), with their parts.
STUDY_SECTIONS = (("skipped", "skipped combinations", ()),
                  ("provenance", "provenance", (("weights-provenance", "backbone weights"), ("software", "software"),
                                                ("configuration", "configuration"))))


def dataset_contents(d: dict) -> list[dict]:
    """The contents entries of one dataset (its index in ``d["index"]``); an external test
    set has one section each."""
    entries = []
    for prefix, label, key in DATASET_SECTIONS:
        if key and not d[key]:
            continue
        if prefix == "external":
            entries += [{"id": f"external-{d['index']}-{n}", "title": f"external: {x['name']}"}
                        for n, x in enumerate(d["external"], 1)]
        else:
            entries.append({"id": f"{prefix}-{d['index']}", "title": label})
    return entries


def contents(datasets: list[dict]) -> list[dict]:
    """The page's contents: the decision, the method, each dataset with its sections, the study's sections."""
    return [{"id": "decision", "title": "decision", "children": []},
            {"id": "method", "title": "how the numbers are made", "children": []},
            *({"id": f"ds-{d['index']}", "title": f"dataset {d['name']}", "children": dataset_contents(d)}
              for d in datasets),
            *({"id": key, "title": label, "children": [{"id": part, "title": name} for part, name in parts]}
              for key, label, parts in STUDY_SECTIONS)]
