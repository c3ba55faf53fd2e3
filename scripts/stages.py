"""One function per workflow step: read the step's inputs, call the concern modules,
write the step's outputs atomically. The Snakemake rules call these through
``python -m scripts <step>``; tests call them directly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scripts import fsutil, manifest
from scripts.manifest import DataError


def verify(dataset: str, root: str, manifest_path: str, leakage: str, index_out: str,
           report_out: str) -> dict:
    """Hash check, class layout, duplicates and leakage; writes the image index."""
    records = manifest.verify_dataset(root, manifest_path)
    classes = manifest.check_classes(records)
    duplicates = manifest.find_duplicates(records)
    leaks = [group for group in duplicates if group["cross_split"]]
    if leaks and leakage == "fail":
        listing = "\n".join(f"  - {' = '.join(g['paths'])}" for g in leaks)
        raise DataError(
            f"{len(leaks)} image(s) are byte-identical across splits of {root} (leakage):\n"
            f"{listing}\nRemove them, or set leakage: warn (report only) or drop "
            "(exclude the val/test copies)."
        )
    for group in leaks:
        print(f"WARNING leakage: {' = '.join(group['paths'])}")
    report = {
        "dataset": dataset,
        "root": str(root),
        "manifest": str(manifest_path),
        "manifest_sha256": manifest.manifest_digest(manifest_path),
        "n_images": len(records),
        "classes": classes,
        "counts": manifest.class_counts(records),
        "duplicates": duplicates,
        "leakage_policy": leakage,
        "verified": "passed",
    }
    index = pd.DataFrame([vars(r) for r in records])
    fsutil.write_csv(index_out, index)
    fsutil.write_json(report_out, report)
    return report


def prepare(root: str, index_path: str, image_size: int, images_out: str,
            conversions_out: str, *, colour_policy: str, colour_tolerance: int,
            colour_min_share: float) -> None:
    """Decode every indexed image once into a ``uint8`` array (index order), checking
    each for colour overlays (``data.colour_overlays``)."""
    from scripts.images import load_images

    index = pd.read_csv(index_path)
    array, conversions = load_images(root, index["path"].tolist(), image_size, colour_policy=colour_policy,
                                     colour_tolerance=colour_tolerance, colour_min_share=colour_min_share)
    with fsutil.atomic_path(images_out) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)
    fsutil.write_json(conversions_out, {"image_size": image_size, **conversions})


def split(index_path: str, seed: int, val_fraction: float, leakage: str, out: str) -> None:
    from scripts.splits import make_split

    fsutil.write_csv(out, make_split(pd.read_csv(index_path), seed, val_fraction, leakage))


def _rows(split_table: pd.DataFrame, subset: str) -> np.ndarray:
    """Rows of the split table (= of the decoded image array) in ``subset``."""
    return np.flatnonzero(split_table["subset"].to_numpy() == subset)


def _subset(images: np.ndarray, split_table: pd.DataFrame, subset: str, classes: list[str]):
    """Images (from the memory-mapped cache), integer labels and table rows of ``subset``."""
    rows = _rows(split_table, subset)
    labels = split_table["label"].iloc[rows].map({c: i for i, c in enumerate(classes)})
    return images[rows], labels.to_numpy(dtype=np.int32), split_table.iloc[rows]


def classes_of(split_table: pd.DataFrame) -> list[str]:
    return sorted(split_table.loc[split_table["split"] == "train", "label"].unique())


def _run_identity(run_dir: str) -> dict:
    """Layout ``…/<dataset>/runs/<model>/<strategy>/seed<N>`` (see workflow/rules/common.smk)."""
    dataset, _, model, strategy, seed = Path(run_dir).parts[-5:]
    return {"dataset": dataset, "model": model, "strategy": strategy,
            "seed": int(seed.removeprefix("seed"))}


def _feature_cache(images_path: str, images: np.ndarray, split_table: pd.DataFrame, run_dir: str,
                   run: dict, settings: dict, weights: dict):
    """The frozen backbone's shared feature cache, keyed by what the features depend on:
    the decoded images, the backbone and its weights (or, for random init, the seed,
    which draws them) and the precision. It lives in ``<results>/<dataset>/cache/``."""
    from scripts.training import FeatureCache, fingerprint

    stat = Path(images_path).stat()
    backbone = weights.get("sha256") or f"random init, seed {run['seed']}"
    key = fingerprint(images=[Path(images_path).name, stat.st_size, stat.st_mtime_ns], model=run["model"],
                      backbone=backbone, precision=settings.get("mixed_precision", "none"))
    name = f"{run['model']}-{Path(images_path).stem}-{key[:16]}.npy"
    path = Path(run_dir).parents[3] / "cache" / "features" / name
    return FeatureCache(path, images, _rows(split_table, "train"), _rows(split_table, "val"))


def train(images: str, split_path: str, run_dir: str, settings: dict, weights: dict,
          threads: int | None = None) -> None:
    """Fit the run in ``run_dir`` (…/<dataset>/runs/<model>/<strategy>/seed<N>), save the
    model and history, then evaluate it on the test set with Grad-CAM in the same
    process: a second job would pay TensorFlow's start-up and the model build again."""
    from scripts import training
    from scripts.weights import check

    run = _run_identity(run_dir)
    applied = training.configure_tensorflow(settings, threads)
    if weights.get("path"):  # never train on a corrupt or swapped weights file
        weights = {**weights, "sha256": check(weights["path"], weights.get("md5"), weights.get("sha256"))}
    split_table = pd.read_csv(split_path)
    cached_images = np.load(images, mmap_mode="r")
    classes = classes_of(split_table)
    x_train, y_train, _ = _subset(cached_images, split_table, "train", classes)
    x_val, y_val, _ = _subset(cached_images, split_table, "val", classes)
    checkpoint = training.Checkpoint(
        Path(run_dir) / "checkpoint",
        training.fingerprint(settings=settings, weights=weights, split=fsutil.sha256_file(split_path),
                             images=Path(images).stat().st_size, **run),
    )
    feature_cache = None
    if run["strategy"] == "frozen" and settings.get("frozen_feature_cache", True):
        feature_cache = _feature_cache(images, cached_images, split_table, run_dir, run, settings, weights)
    model, inference, history, summary = training.train(
        x_train, y_train, x_val, y_val, n_classes=len(classes), settings=settings,
        weights=weights.get("path"), checkpoint=checkpoint, model_name=run["model"],
        strategy=run["strategy"], seed=run["seed"], feature_cache=feature_cache,
    )
    out = Path(run_dir)
    evaluate(inference, run, *_subset(cached_images, split_table, "test", classes), classes, out)
    training.save_model_weights(model, out / "model.weights.h5")
    fsutil.write_csv(out / "history.csv", pd.DataFrame(history))
    fsutil.write_json(out / "train.json", {
        **run, "classes": classes, "n_train": len(x_train), "n_val": len(x_val),
        "settings": settings, "weights": weights, **summary, **applied,
        "environment": training.environment(),
    })
    checkpoint.clear()


def evaluate(inference, run: dict, x_test, y_test, rows: pd.DataFrame, classes: list[str],
             out: Path) -> None:
    """Test predictions, metrics and Grad-CAM heatmaps of every test image (one pass)."""
    from scripts import evaluation
    from scripts.models import last_conv_layer

    layer = last_conv_layer(run["model"])
    result = inference.run(x_test)
    cams, probabilities = result["cams"], result["probabilities"]
    predictions = pd.DataFrame({"path": rows["path"].to_numpy(), "label": rows["label"].to_numpy(),
                                "predicted": [classes[i] for i in probabilities.argmax(1)]})
    for i, name in enumerate(classes):
        predictions[f"p_{name}"] = probabilities[:, i]
    fsutil.write_csv(out / "predictions.csv", predictions)
    with fsutil.atomic_path(out / "gradcam.npz") as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, cams=cams, paths=rows["path"].to_numpy(dtype=str))
    fsutil.write_json(out / "metrics.json", {
        **run, **evaluation.compute_metrics(y_test, probabilities, classes), "gradcam_layer": layer,
    })


def aggregate(runs: list[dict], table_out: str, summary_out: str) -> None:
    """Every expected run (missing ones flagged) and mean ± 95% CI per combination."""
    from scripts import aggregate as agg

    table = agg.collect(runs)
    fsutil.write_csv(table_out, table)
    fsutil.write_csv(summary_out, agg.summarise(table))


def report(study: dict, table: str, output: str, figures: str | None = None) -> None:
    """``study``: the validated config plus the skipped combinations. The key figures
    are also written as PNGs to ``figures`` for ``snakemake --report``."""
    from scripts import report as rep

    frame = pd.read_csv(table, dtype={"slurm_job_id": str, "cuda_visible_devices": str})
    rep.render(study["config"], study["skipped"], frame, "results", output,
               Path(__file__).resolve().parent.parent, figures)
