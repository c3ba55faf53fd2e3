"""scripts/stats/confirmation.py: the prespecified comparison on the confirmation runs
alone, and what the report says of it, on hand-made runs (no training)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import fake_plan, fake_run

from scripts.common.layout import RUN_FILES
from scripts.plan import config as study_config
from scripts.report import report
from scripts.stats.aggregate import aggregate
from scripts.stats.confirmation import confirm, with_confirmation

CLASSES, LABELS = ["NORMAL", "PNEUMONIA"], np.array([0] * 40 + [1] * 40)
STUDY = {("scratch_cnn", "scratch", "none"): (0.7, 0.80), ("vgg16", "frozen", "imagenet"): (0.7, 0.95)}


def write_run(run: dict, share: float, val_f1: float) -> None:
    """A finished run that classifies ``share`` of the test images right (the seed moves it a little)."""
    right = [(i % 10) < round(10 * share) - run["seed"] % 2 for i in range(len(LABELS))]
    probabilities = np.array([[0.2, 0.8] if (label == 1) == ok else [0.8, 0.2]
                              for label, ok in zip(LABELS, right, strict=True)])
    fake_run(run, RUN_FILES, CLASSES, LABELS, probabilities, val_f1=val_f1 + run["seed"] / 1000)


def f1_on_test(run: dict) -> float:
    return json.loads((Path(run["dir"]) / RUN_FILES["metrics"]).read_text())["test"]["f1_macro"]


@pytest.fixture
def study(tmp_path, monkeypatch):
    """Two configurations with seeds 1-3 (vgg16 · frozen chosen on validation, equal on test)
    and confirmation seeds 5-7; the working directory is the study's, as in the workflow."""
    monkeypatch.chdir(tmp_path)
    plan = fake_plan(tmp_path, CLASSES, [(*key, seed) for key in STUDY for seed in (1, 2, 3)], resamples=200,
                     positive_class="PNEUMONIA")
    plan["config"]["evaluation"]["confirmation_seeds"] = [5, 6, 7]
    plan["confirmation_seeds"] = [5, 6, 7]
    for run in plan["runs"]:
        write_run(run, *STUDY[run["model"], run["strategy"], run["weights"]])
    return plan


def confirmation_runs(plan: dict, verdict: dict) -> list[dict]:
    chosen = {name: part["chosen"] for name, part in verdict["datasets"].items()}
    planned = {tuple(run[key] for key in ("dataset", "model", "strategy", "weights", "fraction"))
               for run in plan["runs"]}
    return study_config.confirmation_plan(plan["config"], chosen, planned)["tiny"]["runs"]


def as_read(verdict: dict) -> dict:
    """The verdict as the report step reads it back from its JSON file."""
    return json.loads(json.dumps(verdict, default=str))


def same(a: dict, b: dict) -> bool:
    """Equal comparisons, NaN (no meaningful difference set: no seeds needed) equal to NaN."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def text_of(html: Path) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html.read_text()))


def test_the_prespecified_comparison_uses_the_confirmation_runs_alone(study, tmp_path):
    tables = aggregate(study)
    verdict = as_read(tables["verdict"])
    part = verdict["datasets"]["tiny"]
    assert (part["chosen"]["model"], part["chosen"]["strategy"]) == ("vgg16", "frozen")
    # with confirmation seeds the study's comparison of the choice is one of the baseline family
    assert part["prespecified"] is None and "prespecified" not in set(tables["comparisons"]["family"])
    runs = confirmation_runs(study, verdict)
    for run in runs:  # the chosen configuration is clearly better on fresh seeds
        write_run(run, 0.95 if run["model"] == "vgg16" else 0.6, 0.5)
    confirmed = confirm(study, verdict)["datasets"]["tiny"]
    comparison = confirmed["comparison"]
    assert (confirmed["status"], confirmed["finished"], confirmed["missing"]) == ("confirming", 6, [])
    assert (comparison["family"], comparison["n_pairs"], confirmed["claim"]) == ("prespecified", 3, "beats")
    chosen = [f1_on_test(run) for run in runs if run["model"] == "vgg16"]
    baseline = [f1_on_test(run) for run in runs if run["model"] == "scratch_cnn"]
    assert comparison["difference"] == pytest.approx(np.mean(chosen) - np.mean(baseline))
    assert np.allclose([row["per_seed"] for row in confirmed["per_configuration"]], [chosen, baseline])
    assert len(tables["runs"]) == 6  # the study's runs only

    # the study's own runs of the choice do not enter it: made much worse, the comparison stays
    for run in study["runs"]:
        if run["model"] == "vgg16":
            write_run(run, 0.2, 0.95)
    assert same(confirm(study, verdict)["datasets"]["tiny"]["comparison"], comparison)

    merged = with_confirmation(verdict, json.loads(json.dumps(confirm(study, verdict))))
    merged_part = merged["datasets"]["tiny"]
    assert same(merged_part["prespecified"], comparison) and merged_part["claim"] == "beats"
    report.render(study, {**tables, "verdict": merged}, tmp_path / "r.html")
    text = text_of(tmp_path / "r.html")
    assert "on fresh confirmation seeds of both (5, 6, 7), trained after validation chose" in text
    assert f"{comparison['difference']:+.3f}" in text and "it beats the baseline" in text
    assert "over 3 paired fresh confirmation seeds" in text and "is optimistic" not in text
    assert "p (Holm, the study's seeds; the prespecified comparison is the confirmation seeds', below)" in text


def test_missing_confirmation_runs_make_no_claim_and_are_named(study):
    verdict = as_read(aggregate(study)["verdict"])
    runs = confirmation_runs(study, verdict)
    for run in runs[:3]:  # the chosen configuration's seeds only
        write_run(run, 0.95, 0.5)
    confirmed = confirm(study, verdict)["datasets"]["tiny"]
    assert (confirmed["finished"], confirmed["comparison"], confirmed["claim"]) == (3, None, None)
    assert confirmed["missing"] == [run["dir"] for run in runs[3:]]


def test_the_report_says_when_there_is_nothing_to_confirm_or_no_confirmation_stage(study, tmp_path):
    study["runs"] = [run for run in study["runs"] if run["model"] == "scratch_cnn"]
    tables = aggregate(study)  # the baseline alone: it is the choice
    verdict = as_read(tables["verdict"])
    confirmation = json.loads(json.dumps(confirm(study, verdict)))
    assert confirmation["datasets"]["tiny"]["status"] == study_config.BASELINE_CHOSEN
    report.render(study, {**tables, "verdict": with_confirmation(verdict, confirmation)}, tmp_path / "base.html")
    assert "Confirmation stage: nothing to confirm: the baseline was chosen." in text_of(tmp_path / "base.html")


def test_without_confirmation_seeds_the_report_calls_the_prespecified_comparison_optimistic(study, tmp_path):
    study["config"]["evaluation"]["confirmation_seeds"] = 0
    study["confirmation_seeds"] = []
    tables = aggregate(study)
    verdict = as_read(tables["verdict"])
    assert verdict["datasets"]["tiny"]["prespecified"]["family"] == "prespecified"  # on the study's seeds
    assert confirm(study, verdict)["datasets"]["tiny"]["status"] == study_config.NOT_CONFIGURED
    report.render(study, {**tables, "verdict": verdict}, tmp_path / "r.html")
    text = text_of(tmp_path / "r.html")
    assert "The prespecified comparison is optimistic: its seeds are the ones whose validation scores chose" in text
    assert "No confirmation stage ran (evaluation.confirmation_seeds)" in text
