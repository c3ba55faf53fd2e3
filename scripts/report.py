"""The study report: one self-contained HTML file (Jinja2, autoescaped, images inline)."""

from __future__ import annotations

import base64
import datetime
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
import yaml

from scripts import aggregate, fsutil, gradcam, plots
from scripts.images import load_image
from scripts.plots import STRATEGY_ORDER

PACKAGES = ["tensorflow", "tensorflow-cpu", "keras", "snakemake", "snakemake-executor-plugin-slurm",
            "numpy", "pandas", "scikit-learn", "scipy", "matplotlib", "opencv-python-headless",
            "jinja2"]
HEADLINE = [("accuracy", "Accuracy"), ("f1_macro", "Macro-F1"), ("auc", "AUC-ROC"),
            ("sensitivity_macro", "Sensitivity"), ("specificity_macro", "Specificity")]
PRETRAINED_STRATEGIES = {"frozen", "partial", "full"}
DISPLAY_SIZE = 160


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit(directory: Path) -> str:
    def git(*args):
        return subprocess.run(["git", "-C", str(directory), *args], capture_output=True,
                              text=True, check=False).stdout.strip()

    commit = git("rev-parse", "HEAD")
    if not commit:
        return "unknown (not a git checkout)"
    return commit + (" (with uncommitted changes)" if git("status", "--porcelain") else "")


def order_key(model: str, strategy: str):
    return (model != "scratch_cnn", model, STRATEGY_ORDER.index(strategy))


def run_dir(results: Path, row) -> Path:
    return results / row["dataset"] / "runs" / row["model"] / row["strategy"] / f"seed{row['seed']}"


def load_runs(results: Path, table: pd.DataFrame, classes: list[str]) -> list[dict]:
    """Per model × strategy: its seeds' predictions, confusion matrices, histories, CAMs."""
    combos = []
    done = table[table["status"] == "ok"]
    for (model, strategy), group in done.groupby(["model", "strategy"]):
        combo = {"model": model, "strategy": strategy, "title": f"{model} · {strategy}",
                 "predictions": [], "confusion": [], "histories": []}
        for _, row in group.sort_values("seed").iterrows():
            directory = run_dir(results, row)
            predictions = pd.read_csv(directory / "predictions.csv", keep_default_na=False)
            probs = predictions[[f"p_{c}" for c in classes]].to_numpy()
            y_true = predictions["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
            combo["predictions"].append((y_true, probs))
            combo["confusion"].append(fsutil.read_json(directory / "metrics.json")["confusion_matrix"])
            combo["histories"].append((row["seed"], pd.read_csv(directory / "history.csv")))
            if "cams" not in combo:  # Grad-CAM panels show the first seed
                with np.load(directory / "gradcam.npz") as saved:
                    combo["cams"] = dict(zip(saved["paths"], saved["cams"], strict=True))
                combo["cam_seed"] = row["seed"]
                combo["table"] = predictions.set_index("path")
        combos.append(combo)
    return sorted(combos, key=lambda c: order_key(c["model"], c["strategy"]))


def choose_gradcam_images(combos: list[dict], classes: list[str], per_class: int) -> list[str]:
    """The same test images for every row: per class, the images most often
    misclassified across runs first, then the most often correct (ties by path)."""
    if not combos:
        return []
    tables = [c["table"] for c in combos]
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


def gradcam_panel(root: Path, combos: list[dict], paths: list[str], classes: list[str]) -> dict:
    originals = {p: load_image(root / p, DISPLAY_SIZE)[0] for p in paths}
    rows = []
    for combo in combos:
        cells = []
        for path in paths:
            pred = combo["table"].loc[path]
            probability = float(pred[f"p_{pred['predicted']}"])
            cells.append({
                "image": plots.jpeg_data_uri(gradcam.overlay(originals[path], combo["cams"][path])),
                "true": pred["label"], "predicted": pred["predicted"],
                "probability": probability, "correct": pred["label"] == pred["predicted"],
            })
        rows.append({"title": combo["title"], "seed": combo["cam_seed"], "cells": cells})
    columns = [{"path": p, "image": plots.jpeg_data_uri(originals[p])} for p in paths]
    return {"columns": columns, "rows": rows}


def sample_predictions(root: Path, combo: dict, per_class: int = 4) -> list[dict]:
    table = combo["table"].reset_index()
    picks = table.groupby("label", sort=True).head(per_class)
    return [{
        "image": plots.jpeg_data_uri(load_image(root / row["path"], 112)[0]),
        "path": row["path"], "true": row["label"], "predicted": row["predicted"],
        "probability": float(row[f"p_{row['predicted']}"]),
        "correct": row["label"] == row["predicted"],
    } for _, row in picks.iterrows()]


def verdict(summary: pd.DataFrame, table: pd.DataFrame) -> dict | None:
    if summary.empty:
        return None
    best = summary.sort_values(["f1_macro", "auc"], ascending=False).iloc[0]
    comparisons = {m: aggregate.paired_comparison(table, m) for m, _ in HEADLINE}
    versus = []
    for metric, label in HEADLINE:
        frame = comparisons[metric]
        match = frame[(frame["model"] == best["model"]) & (frame["strategy"] == best["strategy"])]
        if not match.empty:
            versus.append({"label": label, **match.iloc[0].to_dict()})
    return {"best": best.to_dict(), "versus": versus,
            "is_baseline": (best["model"], best["strategy"]) == aggregate.BASELINE}


def dataset_section(name: str, spec: dict, table: pd.DataFrame, results: Path, settings: dict) -> dict:
    data_dir = results / name / "data"
    verify = fsutil.read_json(data_dir / "verify.json")
    conversions_file = data_dir / f"conversions_{settings['training']['image_size']}px.json"
    conversions = fsutil.read_json(conversions_file) if conversions_file.exists() else {}
    classes = verify["classes"]
    runs = table[table["dataset"] == name]
    summary = aggregate.summarise(runs)
    combos = load_runs(results, runs, classes)
    root = Path(spec["path"])
    paths = choose_gradcam_images(combos, classes, settings["gradcam"]["images_per_class"])
    split_file = results / name / "splits" / f"seed{min(settings['seeds'])}.csv"
    split_counts = {}
    if split_file.exists():
        split = pd.read_csv(split_file, keep_default_na=False)
        split_counts = split.groupby(["subset", "label"]).size().unstack(fill_value=0).to_dict("index")
    best = verdict(summary, runs)
    best_combo = next((c for c in combos if best and (c["model"], c["strategy"]) ==
                       (best["best"]["model"], best["best"]["strategy"])), None)
    done = runs[runs["status"] == "ok"]
    return {
        "name": name,
        "classes": classes,
        "verify": verify,
        "conversions": conversions,
        "split_counts": split_counts,
        "val_fraction": settings["data"]["val_fraction"],
        "summary": summary.to_dict("records"),
        "verdict": best,
        "missing": runs[runs["status"] != "ok"].to_dict("records"),
        "runs": runs.sort_values(["model", "strategy", "seed"]).to_dict("records"),
        "figures": {
            "metric_f1": plots.metric_by_strategy(done, "f1_macro", "macro-F1") if len(done) else None,
            "metric_auc": plots.metric_by_strategy(done, "auc", "AUC-ROC") if len(done) else None,
            "roc": plots.curve_grid(combos, classes, "roc") if combos else None,
            "pr": plots.curve_grid(combos, classes, "pr") if combos else None,
            "confusion": plots.confusion_grid(combos, classes) if combos else None,
            "loss": plots.history_grid(combos, "loss") if combos else None,
            "accuracy": plots.history_grid(combos, "accuracy") if combos else None,
        },
        "gradcam": gradcam_panel(root, combos, paths, classes) if paths else None,
        "samples": sample_predictions(root, best_combo) if best_combo else [],
        "best_title": best_combo["title"] if best_combo else None,
    }


def not_pretrained(table: pd.DataFrame) -> list[str]:
    """Backbones that ran frozen/partial/full without pretrained weights."""
    done = table[(table["status"] == "ok") & table["strategy"].isin(PRETRAINED_STRATEGIES)]
    return sorted(done.loc[done["weights_source"] == "none", "model"].unique())


def weights_table(table: pd.DataFrame) -> list[dict]:
    done = table[(table["status"] == "ok") & table["strategy"].isin(PRETRAINED_STRATEGIES)]
    return (done[["model", "weights_source", "weights_sha256"]].drop_duplicates()
            .sort_values("model").to_dict("records"))


def interval(mean: float, half_width: float, digits: int = 3) -> str:
    """A metric's 95% interval clipped to [0, 1]: with 2 seeds t = 12.7 makes the raw
    interval wider than the metric's range."""
    if half_width is None or pd.isna(half_width) or mean is None or pd.isna(mean):
        return "n/a (one seed)"
    low, high = max(0.0, mean - half_width), min(1.0, mean + half_width)
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def write_figures(datasets: list[dict], directory: str | Path) -> None:
    """Each dataset's figures as ``<dataset>-<figure>.png`` (decoded from the data URIs)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    for section in datasets:
        for name, uri in section["figures"].items():
            if uri:
                with fsutil.atomic_path(Path(directory, f"{section['name']}-{name}.png")) as tmp:
                    tmp.write_bytes(base64.b64decode(uri.split(",", 1)[1]))


def render(settings: dict, skipped: list[dict], table: pd.DataFrame, results: str | Path,
           output: str | Path, project: str | Path = ".", figures: str | Path | None = None) -> None:
    results = Path(results)
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("scripts", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["num"] = lambda v, d=3: "–" if v is None or pd.isna(v) else f"{v:.{d}f}"
    environment.filters["interval"] = interval
    context = {
        "title": settings["report"]["title"],
        "generated": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "datasets": [dataset_section(name, spec, table, results, settings)
                     for name, spec in settings["datasets"].items()],
        "not_pretrained": not_pretrained(table),
        "weights": weights_table(table),
        "skipped": skipped,
        "headline": HEADLINE,
        "config_yaml": yaml.safe_dump(settings, sort_keys=False),
        "versions": package_versions(),
        "python": platform.python_version(),
        "commit": git_commit(Path(project)),
        "n_ok": int((table["status"] == "ok").sum()),
        "n_runs": len(table),
    }
    html = environment.get_template("report.html.j2").render(**context)
    if figures:
        write_figures(context["datasets"], figures)
    fsutil.write_text(output, html)
