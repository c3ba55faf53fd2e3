"""The code stays as clean as the standards ask: ruff, snakefmt and snakemake --lint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("command", [
    [str(BIN / "ruff"), "check", "."],
    [str(BIN / "snakefmt"), "--check", "workflow"],
    [sys.executable, "-m", "snakemake", "--lint"],
], ids=["ruff", "snakefmt", "snakemake-lint"])
def test_clean(command):
    result = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    if "--lint" in command:
        assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr
