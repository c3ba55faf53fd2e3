"""Per-rule conda environments: present, parseable and pinned like requirements.txt."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

import pytest
import yaml
from conftest import PROJECT

from scripts.data.manifest import DataError  # noqa: F401  (the package imports without TensorFlow)

# A rule may sit inside an ``if`` (train: one run per job, or packed seeds): indented.
RULE = re.compile(r"^[ \t]*(?:rule|checkpoint) (\w+):(.*?)(?=^[ \t]*(?:rule|checkpoint) |\Z)", re.S | re.M)


def requirement_pins(*files: str) -> dict[str, str]:
    pins = {}
    for file in files or ("requirements.txt", "constraints-gpu.txt"):
        for line in (PROJECT / file).read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                name, version = line.split("==")
                pins[normalise(name)] = version.strip()
    return pins


def normalise(name: str) -> str:
    return re.sub(r"\[.*\]", "", name).strip().lower().replace("_", "-")


def test_every_rule_that_runs_code_declares_a_pinned_env():
    rules = {}
    for smk in (PROJECT / "workflow" / "rules").glob("*.smk"):
        for name, body in RULE.findall(smk.read_text()):
            rules[name] = body
    expected = {"verify", "prepare_images", "split", "fetch_weights", "train", "aggregate", "report"}
    assert expected <= set(rules)
    for name, body in rules.items():
        if "shell:" in body or "script:" in body:
            match = re.search(r'conda:\s*"([^"]+)"', body)
            assert match, f"rule {name} runs code but declares no conda env"
            assert (PROJECT / "workflow" / "rules" / match[1]).resolve().is_file()


def test_env_pins_agree_with_requirements():
    pins = requirement_pins()
    envs = list((PROJECT / "envs").glob("*.yaml"))
    assert {e.name for e in envs} >= {"tensorflow.yaml", "data.yaml", "report.yaml"}
    for env_file in envs:
        env = yaml.safe_load(env_file.read_text())
        assert env["channels"][0] == "conda-forge"
        conda = [d for d in env["dependencies"] if isinstance(d, str)]
        assert "python=3.11" in conda
        pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
        for spec in pip:
            name, version = spec.split("==")
            assert normalise(name) in pins, f"{env_file.name}: {name} is not in requirements.txt"
            assert version == pins[normalise(name)], f"{env_file.name}: {spec} vs {pins[normalise(name)]}"


def requirement_lines(name: str) -> list[str]:
    return [line.split("#")[0].strip() for line in (PROJECT / name).read_text().splitlines()
            if line.split("#")[0].strip()]


def test_gpu_requirements_are_the_runtime_pins_with_tensorflows_cuda_extra():
    """`make install GPU=1` installs requirements-gpu.txt: the runtime pins plus
    tensorflow[and-cuda] at the pinned TensorFlow version, nothing else."""
    lines = requirement_lines("requirements-gpu.txt")
    assert lines == ["-r requirements.txt", "-c constraints-gpu.txt",
                     f"tensorflow[and-cuda]=={requirement_pins()['tensorflow']}"]


def test_the_cuda_wheels_are_pinned_within_tensorflows_range_and_alike_in_the_gpu_env():
    """Every CUDA wheel TensorFlow's and-cuda extra asks for has one pin, inside the
    range TensorFlow accepts, and envs/tensorflow.yaml pins the same."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    wanted = [Requirement(r.split(";")[0]) for r in requires("tensorflow") if 'extra == "and-cuda"' in r]
    pins = requirement_pins("constraints-gpu.txt")
    assert sorted(pins) == sorted(normalise(r.name) for r in wanted)
    assert all(r.specifier.contains(pins[normalise(r.name)]) for r in wanted)
    env = yaml.safe_load((PROJECT / "envs" / "tensorflow.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert {normalise(s.split("==")[0]): s.split("==")[1] for s in pip if s.startswith("nvidia-")} == pins


def pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(not pypi_reachable(), reason="needs PyPI (pip resolves tensorflow[and-cuda])")
@pytest.mark.timeout(600)
def test_gpu_requirements_resolve_from_the_same_pins():
    """pip resolves requirements-gpu.txt (metadata only, ~40 s) without moving a pin:
    TensorFlow's CUDA wheels fit the runtime pins. Against this venv: packages already
    installed at their pin are not in the report."""
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", "-",
                           "-r", "requirements-gpu.txt"], cwd=PROJECT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    resolved = {normalise(item["metadata"]["name"]): item["metadata"]["version"]
                for item in json.loads(done.stdout)["install"]}
    pins = requirement_pins()
    moved = {name: f"{pins[name]} -> {version}" for name, version in resolved.items()
             if name in pins and version != pins[name]}
    assert moved == {}
    from scripts.train.runtime import missing_cuda_packages

    assert set(missing_cuda_packages()) <= set(resolved)  # every CUDA library TensorFlow lacks here
