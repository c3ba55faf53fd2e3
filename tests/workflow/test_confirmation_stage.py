"""The confirmation stage as a user runs it: a tiny real study whose validation choice
sends fresh seeds of the chosen configuration and of the baseline to the train rule,
packed, and whose prespecified comparison then uses those runs alone."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
from conftest import copy_dataset, snakemake, write_config

from scripts.common.layout import PACK_RECORD, RUN_DIR, RUN_FILES

# A pretrained linear probe against a scratch CNN trained for one epoch: the probe wins on
# validation (0.87 against 0.17 macro-F1 measured), so the stage has a choice to confirm.
HED = {"name": "hed", "source": {"vgg16": {"path": "resources/weights/vgg16_hed_notop.h5"}}}
PROBE = {"dataset": "tiny", "model": "vgg16", "strategy": "linear_probe", "weights": "hed", "fraction": "1.0"}
BASELINE = {"dataset": "tiny", "model": "scratch_cnn", "strategy": "scratch", "weights": "none", "fraction": "1.0"}


def test_the_confirmation_stage_trains_fresh_seeds_of_the_choice_and_makes_the_prespecified_comparison(tmp_path):
    """76-132 s measured on 2 busy cores: 2 study runs, then 4 confirmation runs in 2 packs."""
    data = copy_dataset(tmp_path / "data", {"train": 16, "test": 4})
    config = write_config(tmp_path / "c.yaml", data, models=["scratch_cnn", "vgg16"],
                          strategies=["scratch", "linear_probe"], exclude=[{"model": "vgg16", "strategy": "scratch"}],
                          weights=[HED], seeds=[1], evaluation={"confirmation_seeds": [7, 8]},
                          training={"image_size": 32, "batch_size": 8, "epochs": 1})
    packed = ("--set-resources", "train:runs_per_job=2")  # both confirmation seeds of a configuration in one job
    snakemake(tmp_path, "--configfile", str(config), "--cores", "2", *packed)
    results = tmp_path / "results"

    verdict = json.loads((results / "verdict.json").read_text())["datasets"]["tiny"]
    assert (verdict["chosen"]["model"], verdict["chosen"]["strategy"]) == ("vgg16", "linear_probe")
    # the study's seeds: only seed 1 in every table; its comparison of the choice joins the baseline family
    assert set(pd.read_csv(results / "runs.csv")["seed"]) == {1}
    assert set(pd.read_csv(results / "summary.csv")["n_seeds"]) == {1}
    assert "prespecified" not in set(pd.read_csv(results / "comparisons.csv")["family"])
    assert verdict["prespecified"] is None
    assert json.loads((results / "plan.json").read_text())["confirmation_seeds"] == [7, 8]

    # the confirmation runs: both seeds of the choice and of the baseline, each pack one job
    for configuration in (PROBE, BASELINE):
        assert (tmp_path / PACK_RECORD.format(**configuration, seeds="7-8")).is_file()
    confirmation = json.loads((results / "confirmation.json").read_text())["datasets"]["tiny"]
    assert confirmation["status"] == "confirming" and confirmation["finished"] == 4
    per_seed = {}
    for configuration in (PROBE, BASELINE):
        per_seed[configuration["model"]] = [
            json.loads((tmp_path / RUN_DIR.format(**configuration, seed=seed) / RUN_FILES["metrics"]).read_text())[
                "test"]["f1_macro"] for seed in (7, 8)]
    by_title = {row["configuration"].split(" · ")[0]: row for row in confirmation["per_configuration"]}
    for model, values in per_seed.items():
        assert by_title[model]["seeds"] == [7, 8]
        assert np.allclose(by_title[model]["per_seed"], values)  # the runs' own test metrics, nothing else
    comparison = confirmation["comparison"]
    assert (comparison["family"], comparison["metric"], comparison["n_pairs"]) == ("prespecified", "f1_macro", 2)
    assert np.isclose(comparison["difference"], np.mean(per_seed["vgg16"]) - np.mean(per_seed["scratch_cnn"]))
    assert comparison["low"] <= comparison["difference"] <= comparison["high"]
    assert confirmation["claim"] == "too few seeds"  # 2 paired seeds: below the 3 a claim needs

    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", (results / "report.html").read_text()))
    assert "on fresh confirmation seeds of both (7, 8), trained after validation chose" in text
    assert f"{comparison['difference']:+.3f}" in text and "over 2 paired confirmation seeds" in text
    assert "on the confirmation seeds: vgg16 · linear_probe · weights hed" in text  # the choice first
    assert "It is made on the confirmation stage’s runs alone: seeds 7, 8" in text
    assert "is optimistic" not in text

    # a later invocation finds the stage done: the checkpoint's choice and its packs are stable
    again = snakemake(tmp_path, "--configfile", str(config), "--cores", "2", *packed, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
