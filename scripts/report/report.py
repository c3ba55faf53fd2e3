"""The study report: one self-contained HTML file (Jinja2, autoescaped, images inline).

It renders what the aggregate stage computed (``runs``, ``summary``, ``comparisons``,
``verdict``) and draws the figures from the finished runs' files named in the plan. It
never computes a statistic of its own, and it renders whatever finished: a dataset
without finished runs, or a study without any, still gets its page.

What it reads is :mod:`scripts.report.tables`, each dataset's sections
:mod:`scripts.report.view`, the first screen's decision and warnings
:mod:`scripts.report.qualifiers`; this module renders them (Jinja) and writes the page.
"""

from __future__ import annotations

import base64
import datetime
import subprocess
from pathlib import Path

import jinja2
import pandas as pd

from scripts.common import fsutil
from scripts.data.external import ALIGNMENT, DIFFERENT_RADIOGRAPHS_BELOW, FINGERPRINT_SIZE, NEAR_DUPLICATE_CORRELATION
from scripts.plan.config import CONFIRMING, NOT_CONFIGURED, confirmation_seeds
from scripts.plan.grid import SCRATCH, config_title
from scripts.report.qualifiers import with_decisions
from scripts.report.tables import FIELD_TABLES
from scripts.report.view import (
    LABELS,
    configuration_section,
    contents,
    dataset_section,
    detectable,
    interval,
    kept_epochs,
    not_pretrained,
    number,
    weights_table,
)


def git_commit(directory: Path) -> str:
    def git(*args):
        return subprocess.run(["git", "-C", str(directory), *args], capture_output=True,
                              text=True, check=False).stdout.strip()

    commit = git("rev-parse", "HEAD")
    if not commit:
        return "unknown (not a git checkout)"
    return commit + (" (with uncommitted changes)" if git("status", "--porcelain") else "")


def write_figures(datasets: list[dict], directory: str | Path) -> None:
    """Each dataset's figures as ``<dataset>-<figure>.png`` (decoded from the data URIs)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    for section in datasets:
        for name, uri in section["figures"].items():
            with fsutil.atomic_path(Path(directory, f"{section['name']}-{name}.png")) as tmp:
                tmp.write_bytes(base64.b64decode(uri.split(",", 1)[1]))


def render(plan: dict, tables: dict, output: str | Path, project: str | Path = ".",
           figures: str | Path | None = None) -> None:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("scripts.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["num"] = number
    environment.filters["interval"] = interval
    environment.filters["kept_epochs"] = kept_epochs
    environment.filters["detectable"] = detectable
    environment.filters["label"] = lambda metric: LABELS[metric]
    environment.filters["config_title"] = config_title
    environment.globals["SCRATCH"] = SCRATCH
    environment.globals["CONFIRMING"] = CONFIRMING
    environment.globals["NOT_CONFIGURED"] = NOT_CONFIGURED
    tables = {**{name: pd.DataFrame() for name in FIELD_TABLES}, **tables}
    verdict = tables["verdict"]
    study = {"not_pretrained": not_pretrained(tables["runs"])}
    datasets = with_decisions([dataset_section(name, plan, tables) for name in plan["datasets"]], study)
    context = {
        "title": plan["config"]["report"]["title"],
        "generated": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "datasets": datasets,
        "contents": contents(datasets),
        "not_pretrained": study["not_pretrained"],
        "weights": weights_table(tables["runs"]),
        "skipped": plan["skipped"],
        "near_duplicate_check": {"correlation": NEAR_DUPLICATE_CORRELATION, "size": FINGERPRINT_SIZE,
                                 "different_below": DIFFERENT_RADIOGRAPHS_BELOW, "alignment": ALIGNMENT},
        "software": verdict["software"],
        "bootstrap": verdict["bootstrap"],
        "selection_metric": verdict["selection_metric"],
        "configuration": configuration_section(plan),
        "confirmation_seeds": confirmation_seeds(plan["config"]),
        "commit": git_commit(Path(project)),
        "n_ok": verdict["finished"],
        "n_runs": verdict["planned"],
    }
    html = environment.get_template("report.html.j2").render(**context)
    if figures:
        write_figures(context["datasets"], figures)
    fsutil.write_text(output, html)
