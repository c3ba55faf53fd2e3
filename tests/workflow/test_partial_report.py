"""``allow_missing_runs`` always gives a report: a dataset with every run missing, a
dataset whose verification never ran, a study with no finished run at all. Each
renders without a stack trace and opens in headless Chromium with the missing runs
listed; the template meets no undefined value with minimal inputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import CHROMIUM, copy_dataset, fake_run, open_in_chromium, snakemake, write_config

from scripts.common.layout import PACK_RECORD, RUN_FILES


@pytest.fixture(scope="module")
def three_datasets(tmp_path_factory):
    """``trained`` has finished runs (real data steps, faked training), ``verified`` was
    verified but nothing trained, ``unverified`` never passed verification."""
    work = tmp_path_factory.mktemp("partial")
    data = copy_dataset(work / "data", {"train": 6, "test": 2}, extra=())
    broken = copy_dataset(work / "broken", {"train": 3, "test": 1}, extra=())
    victim = sorted((broken / "train" / "Normal").iterdir())[0]
    victim.write_bytes(victim.read_bytes() + b"changed")
    datasets = {"trained": {"path": str(data), "manifest": f"{data}.sha256"},
                "verified": {"path": str(data), "manifest": f"{data}.sha256"},
                "unverified": {"path": str(broken), "manifest": f"{broken}.sha256"}}
    config = write_config(work / "c.yaml", data, datasets=datasets, models=["scratch_cnn", "vgg16"],
                          strategies=["scratch", "frozen"], seeds=[1, 2], evaluation={"bootstrap_resamples": 100})
    snakemake(work, "--configfile", str(config), "--cores", "2", "results/trained/data/images_32px.npy",
              "results/trained/data/test_thumbnails.npz", "results/trained/splits/seed1.csv",
              "results/trained/splits/seed2.csv", "results/verified/data/verify.json")
    failed = snakemake(work, "--configfile", str(config), "--cores", "1", "results/unverified/data/verify.json",
                       check=False)
    assert failed.returncode != 0
    return work, config


def fake_finished_runs(work, dataset: str) -> None:
    plan = json.loads((work / "results/plan.json").read_text())
    index = pd.read_csv(work / f"results/{dataset}/data/index.csv", keep_default_na=False)
    test = index[index["split"] == "test"]
    classes = sorted(index["label"].unique())
    labels = test["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    for seed, run in enumerate(r for r in plan["runs"] if r["dataset"] == dataset):
        probabilities = np.random.default_rng(seed).dirichlet(np.ones(len(classes)), len(labels))
        fake_run({**run, "dir": str(work / run["dir"])}, RUN_FILES, classes, labels, probabilities,
                 val_f1=0.3 + seed / 10, paths=list(test["path"]))
        record = work / PACK_RECORD.format(**run, seeds=f"{run['seed']}-{run['seed']}")  # as its train job does
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"runs": [{"seed": run["seed"]}]}))


def report(work, config, tmp_path, *extra) -> tuple[str, dict | None]:
    result = snakemake(work, "--configfile", str(config), "--cores", "1", "--config", "allow_missing_runs=true",
                       *extra)
    assert "Traceback" not in result.stderr
    html = (work / "results/report.html").read_text()
    page = open_in_chromium(work / "results/report.html", tmp_path) if CHROMIUM else None
    return html, page


def test_no_finished_run_gives_a_short_page_listing_every_run(three_datasets, tmp_path):
    work, config = three_datasets
    html, page = report(work, config, tmp_path)
    assert "No run has finished yet" in html and "0 of 18 runs finished" in html
    assert html.count("log folder <code>logs/") >= 18
    assert "logs/verified/vgg16/frozen/none/frac1.0/seed2/" in html
    assert "This dataset's verification did not run" in html and "logs/unverified/verify.log" in html
    if page:
        assert page["outside"] == [] and [i for i in page["images"] if not i["ok"]] == []
        assert "No run has finished yet" in page["text"]


def test_a_dataset_without_finished_runs_beside_one_with_them(three_datasets, tmp_path):
    work, config = three_datasets
    fake_finished_runs(work, "trained")
    html, page = report(work, config, tmp_path)
    assert "6 of 18 runs finished" in html
    sections = {part.split("Dataset: ")[1].split("<")[0]: part for part in html.split('<h2 id="ds-')[1:]}
    trained, verified, unverified = sections["trained"], sections["verified"], sections["unverified"]
    assert "Chosen on validation" in trained and 'class="gradcam-cell"' in trained
    assert "No run of this dataset finished" in verified and "6 runs failed or did not finish" in verified
    assert "Verification: <strong>passed</strong>" in verified  # its data checks still show
    assert "verification did not run" in unverified and "classes unknown" in unverified
    if page:
        assert page["cells"] > 0 and [i for i in page["images"] if not i["ok"]] == []
        assert "No run of this dataset finished" in page["text"]


def test_the_template_renders_from_minimal_inputs(tmp_path):
    """Every value the template reads is present (StrictUndefined would raise otherwise)."""
    from conftest import fake_plan

    from scripts.report import report as rep
    from scripts.stats.aggregate import aggregate

    plan = fake_plan(tmp_path, ["a", "b", "c"], [("scratch_cnn", "scratch", "none", 1)])
    tables = aggregate(plan)
    rep.render(plan, {"runs": tables["runs"], "summary": pd.DataFrame(), "comparisons": pd.DataFrame(),
                      "verdict": json.loads(json.dumps(tables["verdict"]))}, tmp_path / "r.html")
    assert "No run has finished yet" in (tmp_path / "r.html").read_text()
