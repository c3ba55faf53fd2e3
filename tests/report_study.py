"""A report rendered from hand-made runs (no training), in which every dataset section
shows: for the report's unit and browser tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from conftest import fake_plan, fake_run

from scripts.common.layout import RUN_FILES
from scripts.report import report
from scripts.stats.aggregate import aggregate


def hand_made_report(root: Path) -> Path:
    """Three configurations, two seeds each, two pretraining sources (so that every dataset
    section shows), Grad-CAM maps in a corner (every one flagged as a shortcut), vgg16 frozen
    · imagenet best on validation and much worse on test than on validation."""
    classes, labels = ["NORMAL", "PNEUMONIA"], np.array([0] * 10 + [1] * 10)
    configs = {("scratch_cnn", "scratch", "none"): (0.8, 0.80), ("vgg16", "frozen", "imagenet"): (0.6, 0.95),
               ("vgg16", "frozen", "none"): (0.8, 0.85)}  # (test share right, validation F1)
    plan = fake_plan(root, classes, [(*key, seed) for key in configs for seed in (1, 2)], resamples=100,
                     positive_class="PNEUMONIA")
    plan["config"]["data"]["leakage"] = "warn"
    paths = [f"test/{classes[label]}/{i:04d}.png" for i, label in enumerate(labels)]
    for run in plan["runs"]:
        share, val_f1 = configs[run["model"], run["strategy"], run["weights"]]
        right = [(i % 10) < round(10 * share) + run["seed"] % 2 for i in range(len(labels))]
        probabilities = np.array([[0.2, 0.8] if (label == 1) == ok else [0.8, 0.2]
                                  for label, ok in zip(labels, right, strict=True)])
        fake_run(run, RUN_FILES, classes, labels, probabilities, val_f1=val_f1 + run["seed"] / 1000, paths=paths)
        cams = np.zeros((len(labels), 8, 8), np.float16)
        cams[:, 0, 0] = 1.0  # all the mass in a corner: a shortcut
        np.savez_compressed(Path(run["dir"]) / RUN_FILES["gradcam"], cams=cams, paths=np.asarray(paths))
    files = plan["datasets"]["tiny"]
    Path(files["thumbnails"]).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(files["thumbnails"], images=np.zeros((len(paths), 16, 16, 3), np.uint8),
                        paths=np.asarray(paths))
    pd.DataFrame({"path": paths, "label": [classes[label] for label in labels],  # the first two are copies
                  "most_similar": [f"train/{i}.png" for i in range(len(paths))], "most_similar_split": "train",
                  "correlation": [1.0, 0.9] + [0.3] * 18, "identical": [True] + [False] * 19,
                  "near_duplicate": [True, True] + [False] * 18, "group": "", "group_in_training": False}
                 ).to_csv(files["leakage"], index=False)
    tables = aggregate(plan)
    report.render(plan, {**tables, "verdict": json.loads(json.dumps(tables["verdict"], default=str))},
                  root / "r.html")
    return root / "r.html"
