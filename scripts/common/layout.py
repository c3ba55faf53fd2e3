"""Where the workflow's files live: every path pattern and file name, in one place.

The rules (workflow/rules/common.smk), the steps, the benchmark and the tests import
these. Who turns a pattern into a path:

* the rules, for every declared input and output;
* the plan (scripts/plan/config.py), for every run's folder (``RUN_DIR``, ``RUN_LOG_DIR``)
  and each trained dataset's files (``DATASET_FILES``, ``SPLIT``, ``EXTERNAL_OVERLAP``),
  written to ``PLAN``;
* the steps that read every run (scripts/report/aggregate.py, deployment.py, report.py):
  they receive the plan, not a path per file, and join a ``RUN_FILES`` name to each
  run's planned folder;
* the train step (scripts/stages.py): ``FINISHED_RUN`` beside the run's outputs.

Every other step receives explicit paths.
"""

from __future__ import annotations

SPLIT = "results/{dataset}/splits/seed{seed}.csv"
FEATURE_CACHE = "results/{dataset}/cache/features"
RUN_DIR = "results/{dataset}/runs/{model}/{strategy}/{weights}/frac{fraction}/seed{seed}"
RUN_LOG_DIR = "logs/{dataset}/{model}/{strategy}/{weights}/frac{fraction}/seed{seed}"
# A pack job (several seeds of one configuration in one process): its record, written
# once every run of the pack finished, and its log. The runs keep their own RUN_DIR.
PACK_RECORD = "results/{dataset}/packs/{model}/{strategy}/{weights}/frac{fraction}/seeds{seeds}.json"
PACK_LOG_DIR = "logs/{dataset}/{model}/{strategy}/{weights}/frac{fraction}/seeds{seeds}"
# Inside RUN_DIR, written after every RUN_FILES file: what the run was trained from (a
# pack job that runs again skips a run whose record matches).
FINISHED_RUN = "finished.json"
# The files of one training run (inside RUN_DIR), by the name the train step knows them by.
RUN_FILES = {
    "model": "model.weights.h5",
    "history": "history.csv",
    "info": "train.json",
    "predictions": "predictions.csv",
    "val_predictions": "val_predictions.csv",
    "metrics": "metrics.json",
    "gradcam": "gradcam.npz",
    "external": "external_predictions.csv",
}
DATASET_FILES = {
    "index": "results/{dataset}/data/index.csv",
    "verify": "results/{dataset}/data/verify.json",
    "images": "results/{dataset}/data/images_{size}px.npy",
    "conversions": "results/{dataset}/data/images_{size}px.json",
    "thumbnails": "results/{dataset}/data/test_thumbnails.npz",
    # Per test image: its most similar training or validation image, and whether it is a copy.
    "leakage": "results/{dataset}/data/leakage.csv",
    # The near-copy pairs within the training pool and within the test set.
    "copies": "results/{dataset}/data/copies.csv",
}
# Which external test images are the same radiograph as an image of the trained dataset.
EXTERNAL_OVERLAP = "results/{dataset}/external/{external}.csv"
PLAN = "results/plan.json"
# The confirmation stage's prespecified comparison (fresh seeds of the validation-chosen
# configuration and of the baseline), written once the aggregate step chose.
CONFIRMATION = "results/confirmation.json"
# The aggregate step's tables: csv files, and the verdict as JSON.
TABLES = {
    "runs": "results/runs.csv",
    "summary": "results/summary.csv",
    "comparisons": "results/comparisons.csv",
    "verdict": "results/verdict.json",
    "learning_curve": "results/learning_curve.csv",
    "external": "results/external.csv",
    "weights_comparison": "results/weights_comparison.csv",
    # What to deploy: ensembles, the validation-chosen operating point, the decision curve.
    "ensembles": "results/ensembles.csv",
    "operating_point": "results/operating_point.csv",
    "decision_curve": "results/decision_curve.csv",
}
