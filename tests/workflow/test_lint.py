"""The code stays as clean as the standards ask: ruff, snakefmt and snakemake --lint."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("command", [
    [str(BIN / "ruff"), "check", "."],
    [str(BIN / "snakefmt"), "--check", "workflow"],
    [sys.executable, "-m", "snakemake", "--lint", "--configfile", "config/demo.yaml"],
], ids=["ruff", "snakefmt", "snakemake-lint"])
def test_clean(command):
    result = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    if "--lint" in command:
        assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_workflow_catalog_files():
    """What the Snakemake workflow catalog's "standardized usage" tier reads: the usage
    file (keys and types as documented), a LICENSE matching pyproject, config/README.md,
    workflow/Snakefile and a README usage section."""
    import tomllib

    import yaml

    usage = yaml.safe_load((PROJECT / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert set(usage) <= {"mandatory-flags", "software-stack-deployment"}
    deployment = usage["software-stack-deployment"]
    assert set(deployment) <= {"conda", "apptainer", "apptainer+conda", "singularity",
                               "singularity+conda", "report"}
    assert all(isinstance(value, bool) for value in deployment.values())
    assert deployment["conda"] and deployment["report"]  # envs/ per rule; `snakemake --report` works
    flags = usage["mandatory-flags"]
    assert isinstance(flags["desc"], str) and isinstance(flags["flags"], str | list)

    license_text = (PROJECT / "LICENSE").read_text()
    declared = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["license"]["text"]
    assert declared == "MIT" and license_text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge" in license_text
    for path in ("workflow/Snakefile", "config/README.md", "workflow/schemas/config.schema.yaml"):
        assert (PROJECT / path).is_file(), path
    readme = (PROJECT / "README.md").read_text()
    assert "## Usage" in readme and "snakemake" in readme.lower() and "workflow" in readme.lower()


@pytest.mark.skipif(os.geteuid() != 0, reason="tests/run.sh starts the cluster only as root")
def test_the_suite_stops_with_its_own_message_when_the_cluster_does_not_start(tmp_path):
    """tests/run.sh with a cluster script that fails: no pytest run, exit 1, a clear message."""
    (tmp_path / "tests" / "slurm").mkdir(parents=True)
    shutil.copy(PROJECT / "tests" / "run.sh", tmp_path / "tests" / "run.sh")
    (tmp_path / "tests" / "slurm" / "cluster.sh").write_text("echo 'slurmctld: fatal' >&2; exit 1\n")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "tests/run.sh", "--co"], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 1
    assert "the test Slurm cluster did not start" in done.stderr and "slurmctld: fatal" in done.stderr
    assert "collected" not in done.stdout
