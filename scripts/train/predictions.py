"""A trained run's predictions: validation and test tables with their metrics, the
Grad-CAM heatmap of every test image, and the predictions on every external test set."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scripts.common import tracing

EXTERNAL_COLUMNS = ["dataset", "path", "label", "predicted"]


def predictions_table(rows: pd.DataFrame, probabilities: np.ndarray, classes: list[str]) -> pd.DataFrame:
    table = pd.DataFrame({"path": rows["path"].to_numpy(), "label": rows["label"].to_numpy(),
                          "predicted": [classes[i] for i in probabilities.argmax(1)]})
    for i, name in enumerate(classes):
        table[f"p_{name}"] = probabilities[:, i]
    return table


@tracing.traced("evaluate")
def evaluate(inference, run, images: np.ndarray, label_ids: np.ndarray, split_table: pd.DataFrame,
             rows: dict, classes: list[str], positive_class: str | None) -> dict:
    """Validation and test predictions and metrics, and the Grad-CAM heatmap of every
    test image (one pass over the test images); a value per name of the run files
    ``predictions``, ``val_predictions``, ``gradcam`` (``cams``, ``paths``) and ``metrics``
    (with the explained layer, ``gradcam_layer``, and its cells per side, ``gradcam_cells``)."""
    from scripts.stats import evaluation

    test = inference.run(images[rows["test"]], cams=True)
    validation = inference.run(images[rows["val"]])["probabilities"]
    return {
        "predictions": predictions_table(split_table.iloc[rows["test"]], test["probabilities"], classes),
        "val_predictions": predictions_table(split_table.iloc[rows["val"]], validation, classes),
        "gradcam": {"cams": test["cams"], "paths": split_table["path"].to_numpy(dtype=str)[rows["test"]]},
        "metrics": {
            **vars(run),
            "test": evaluation.compute_metrics(label_ids[rows["test"]], test["probabilities"], classes,
                                               positive_class),
            "validation": evaluation.compute_metrics(label_ids[rows["val"]], validation, classes,
                                                     positive_class),
            "gradcam_layer": inference.layer_name,
            "gradcam_cells": int(test["cams"].shape[1]),
        },
    }


def evaluate_external(inference, classes: list[str], external_tests: list[dict]) -> pd.DataFrame:
    """The run's predictions on the test split of every external dataset (``external_tests``:
    its ``dataset`` name, ``class_map``, decoded ``images`` and ``index`` table), its
    probabilities collapsed onto the external classes by the class map (one table; a
    ``p_<class>`` column per external class of any of them, empty for the others)."""
    from scripts.data import external

    parts = []
    for test in external_tests:
        index = test["index"]
        rows = np.flatnonzero(index["split"].to_numpy() == "test")
        probabilities = inference.run(test["images"][rows])["probabilities"]
        collapsed = external.collapse(probabilities, classes, test["class_map"])
        table = predictions_table(index.iloc[rows], collapsed, external.external_classes(test["class_map"]))
        parts.append(table.assign(dataset=test["dataset"]))
    if not parts:
        return pd.DataFrame(columns=EXTERNAL_COLUMNS)
    table = pd.concat(parts, ignore_index=True)
    probability_columns = sorted(c for c in table.columns if c.startswith("p_"))
    return table[EXTERNAL_COLUMNS + probability_columns]
