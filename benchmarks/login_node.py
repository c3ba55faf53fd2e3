"""The login node at 10,000 runs: ``python -m benchmarks.login_node``.

What the controlling Snakemake and the study-wide steps cost at 10,010 runs (5 datasets
x 2,002 runs) with the schema's defaults (1,000 bootstrap resamples): the wall time and
peak RSS of Snakemake's start-up as a user starts it, with the shipped Slurm profile
(a dry run of the whole grid with nothing trained, and with every run finished; the
first row also counts the jobs by rule: 650 train packs, not 10,010 runs), of the
``plan`` rule, and of the ``aggregate`` and ``report``
steps (the same commands the rules run). The runs' files are fabricated from one
template per strategy (``tests/conftest.py`` ``fake_run``): training is not what is
measured. Rows are printed and written to ``results/benchmarks/login_node.{csv,md}``;
``--seeds`` shrinks the grid (the smoke test runs 2 seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.__main__ import PROJECT, describe_machine, run_measured
from scripts.common import layout

sys.path.insert(0, str(PROJECT / "tests"))  # fake_run and the small dataset copy of the tests

DATASETS = 5
SEEDS = 154  # 5 datasets x (scratch_cnn x scratch + 3 backbones x 4 strategies) x 154 = 10,010 runs
MODELS = ["scratch_cnn", "vgg16", "resnet50", "efficientnetb0"]
STRATEGIES = ["scratch", "frozen", "partial", "full"]
ROWS: list[dict] = []
TIME = "/usr/bin/time"  # GNU time (Debian package `time`)
SLURM_PROFILE = PROJECT / "profiles" / "slurm"  # what a user submits with: packs, not runs


def snakemake_command(work: Path, config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(PROJECT / "workflow" / "Snakefile"),
            "--directory", str(work), "--configfile", str(config), *args]


def environment() -> dict:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "PYTHONPATH": str(PROJECT)}


def job_counts(log: Path) -> str:
    """The dry run's jobs by rule (Snakemake's "Job stats" table), e.g. "train 650, split 770"."""
    import re

    table = log.read_text().split("Job stats:", 1)[-1].split("\n\n", 1)[0]  # the first table: the plan
    counts = re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)
    return ", ".join(f"{rule} {count}" for rule, count in counts if rule not in ("total", "all"))


def measure(what: str, command: list[str], log: Path, runs: int, cwd: Path | None = None) -> dict:
    """Run ``command`` once (in ``cwd``: the study's folder, whose relative paths the
    plan holds) under ``/usr/bin/time -v``; record its wall clock, CPU time and peak RSS.
    Not ``wait4`` here: a child forked from this large process inherits its peak RSS as
    a floor (Linux keeps it across exec)."""
    usage = log.with_suffix(".time")
    inside = ["env", "-C", str(cwd)] if cwd else []
    result = run_measured([TIME, "-v", "-o", str(usage), *inside, *command], log, environment())
    counters = dict(line.strip().rsplit(": ", 1) for line in usage.read_text().splitlines() if ": " in line)
    cpu = float(counters["User time (seconds)"]) + float(counters["System time (seconds)"])
    row = {"measurement": what, "runs": runs, "wall_s": round(result["wall"], 1), "cpu_s": round(cpu, 1),
           "peak_rss_mb": round(int(counters["Maximum resident set size (kbytes)"]) / 1024),
           "load_average": " ".join(f"{v:.1f}" for v in os.getloadavg()),
           "measured": time.strftime("%Y-%m-%d %H:%M")}
    ROWS.append(row)
    print(f"{what}: {row['wall_s']} s, peak RSS {row['peak_rss_mb']} MB (CPU {row['cpu_s']} s, "
          f"load average {row['load_average']})", flush=True)
    return row


def study_config(work: Path, seeds: int, gradcam: dict | None = None, evaluation: dict | None = None) -> Path:
    """The config of a study of 5 copies of a small demo subset x ``seeds`` seeds.
    ``gradcam``/``evaluation``: settings other than the defaults."""
    from conftest import copy_dataset, write_config

    data = copy_dataset(work / "data", {"train": 6, "test": 2}, extra=())
    datasets = {f"site{i}": {"path": str(data), "manifest": f"{data}.sha256"} for i in range(DATASETS)}
    extra = {"evaluation": evaluation} if evaluation else {}
    return write_config(work / "c.yaml", data, datasets=datasets, models=MODELS, strategies=STRATEGIES,
                        seeds=list(range(1, seeds + 1)), gradcam=gradcam or {}, **extra)


def fabricated_study(work: Path, seeds: int, gradcam: dict | None = None,
                     evaluation: dict | None = None) -> tuple[Path, list[dict]]:
    """:func:`study_config`'s study, its data steps run for real (one split copied to every
    seed) and its runs fabricated; its config and planned runs."""
    import numpy as np
    import pandas as pd
    from conftest import fake_run

    config = study_config(work, seeds, gradcam, evaluation)
    names = [f"site{i}" for i in range(DATASETS)]
    targets = [f"results/{n}/{f}" for n in names for f in
               ("data/images_32px.npy", "data/test_thumbnails.npz", "splits/seed1.csv")]
    run_measured(snakemake_command(work, config, "--cores", "2", *targets), work / "logs" / "data.log",
                 environment())
    for name in names:
        for seed in range(2, seeds + 1):
            shutil.copyfile(work / f"results/{name}/splits/seed1.csv", work / f"results/{name}/splits/seed{seed}.csv")
    run_measured(snakemake_command(work, config, "--cores", "1", layout.PLAN), work / "logs" / "plan.log",
                 environment())
    runs = json.loads((work / layout.PLAN).read_text())["runs"]
    index = pd.read_csv(work / "results/site0/data/index.csv", keep_default_na=False)
    test = index[index["split"] == "test"]
    classes = sorted(index["label"].unique())
    labels = test["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    template = work / "template"
    probabilities = np.eye(len(classes))[labels] * 0.6 + 0.4 / len(classes)
    for strategy in STRATEGIES:
        fake_run({"dir": str(template / strategy), "strategy": strategy}, layout.RUN_FILES, classes, labels,
                 probabilities, val_f1=0.5, paths=list(test["path"]))
    return config, runs


def finish_runs(work: Path, runs: list[dict]) -> None:
    """Every run's files from the template of its strategy, and its pack's record as the
    train job writes it last (one run per pack, as the rules plan them without a profile)."""
    for run in runs:
        shutil.copytree(work / "template" / run["strategy"], work / run["dir"])
        record = work / layout.PACK_RECORD.format(**run, seeds=f"{run['seed']}-{run['seed']}")
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"runs": [{"seed": run["seed"]}]}))


def table_paths(work: Path) -> str:
    return json.dumps({name: str(work / path) for name, path in layout.TABLES.items()})


def bench_login_node(work: Path, seeds: int) -> None:
    import pandas as pd

    config, runs = fabricated_study(work, seeds)
    logs = work / "logs"
    (work / layout.PLAN).unlink()
    profile = ("--profile", str(SLURM_PROFILE))
    fresh = measure("snakemake -n --profile profiles/slurm, nothing trained (start-up: parse, plan, DAG)",
                    snakemake_command(work, config, "-n", *profile), logs / "dry-fresh.log", len(runs))
    fresh["jobs"] = job_counts(logs / "dry-fresh.log")
    print(f"  jobs: {fresh['jobs']}", flush=True)
    measure("plan rule (snakemake --cores 1 results/plan.json)",
            snakemake_command(work, config, "--cores", "1", layout.PLAN), logs / "plan-rule.log", len(runs))
    finish_runs(work, runs)
    measure("snakemake -n --profile profiles/slurm, every run finished (start-up before aggregate and report)",
            snakemake_command(work, config, "-n", *profile), logs / "dry-finished.log", len(runs))
    plan = str(work / layout.PLAN)
    measure("aggregate (python -m scripts aggregate, 1,000 bootstrap resamples)",
            [sys.executable, "-m", "scripts", "aggregate", "--plan", plan, "--tables", table_paths(work)],
            logs / "aggregate.log", len(runs), cwd=work)
    statuses = pd.read_csv(work / layout.TABLES["runs"])["status"]
    if len(statuses) != len(runs) or (statuses != "ok").any():
        raise RuntimeError(f"aggregate did not find every fabricated run: {statuses.value_counts().to_dict()}")
    measure("report (python -m scripts report)",
            [sys.executable, "-m", "scripts", "report", "--plan", plan, "--tables", table_paths(work),
             "--output", str(work / "results/report.html"), "--figures", str(work / "results/figures")],
            logs / "report.log", len(runs), cwd=work)


def bench_dataset_steps(work: Path) -> None:
    """The per-dataset steps that read every raw image (verify hashes them; leakage,
    thumbnails and external_overlap decode them), on the demo's 317 images: their cost
    per image, from which a large dataset's cost follows."""
    from benchmarks.__main__ import DEMO, DEMO_MANIFEST

    images = sum(1 for path in DEMO.glob("*/*/*") if path.is_file())
    folder, logs = work / "demo", work / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    index = str(folder / "index.csv")
    step = [sys.executable, "-m", "scripts"]
    commands = {
        "verify (SHA256 of every image)": [
            "verify", "--dataset", "demo", "--root", str(DEMO), "--manifest", str(DEMO_MANIFEST), "--leakage", "warn",
            "--positive-class=", "--index", index, "--report", str(folder / "verify.json")],
        "leakage (decode, fingerprint and align every image)": [
            "leakage", "--root", str(DEMO), "--index", index, "--policy", "warn",
            "--output", str(folder / "leakage.csv"), "--copies", str(folder / "copies.csv")],
        "thumbnails (decode the test images)": [
            "thumbnails", "--root", str(DEMO), "--index", index, "--output", str(folder / "thumbnails.npz")],
        "external_overlap (decode both datasets' images; the demo against itself)": [
            "external-overlap", "--root", str(DEMO), "--index", index, "--external-root", str(DEMO),
            "--external-index", index, "--output", str(folder / "overlap.csv")],
    }
    for what, arguments in commands.items():
        measure(f"{what}, {images} demo images", step + arguments, logs / f"{arguments[0]}.log", 0)


def write_rows(out: Path, machine: str) -> None:
    import pandas as pd

    from scripts.common import fsutil

    table = pd.DataFrame(ROWS)
    fsutil.write_csv(out / "login_node.csv", table)
    fsutil.write_text(out / "login_node.md", f"# The login node at 10,000 runs\n\nMachine: {machine}\n\n"
                      f"{table.to_markdown(index=False)}\n")
    print(f"\nwrote {out / 'login_node.csv'} and {out / 'login_node.md'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.login_node", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="results/benchmarks", help="folder for login_node.csv/.md")
    parser.add_argument("--seeds", type=int, default=SEEDS, help=f"seeds per configuration (default {SEEDS})")
    parser.add_argument("--parts", nargs="+", choices=("grid", "data"), default=["grid", "data"],
                        help="grid: the 10,010-run study; data: the per-dataset steps on the demo images")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (its path is printed)")
    args = parser.parse_args(argv)
    machine = describe_machine()
    print(f"machine: {machine}", flush=True)
    # Kept when a step fails (its logs are there) or with --keep.
    work = Path(tempfile.mkdtemp(prefix="cxr-login-node-"))
    print(f"work folder: {work}", flush=True)
    if "data" in args.parts:
        bench_dataset_steps(work)
    if "grid" in args.parts:
        bench_login_node(work, args.seeds)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    write_rows(out, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
