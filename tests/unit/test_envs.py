"""Per-rule conda environments: present, parseable and pinned like requirements.txt."""

from __future__ import annotations

import re

import yaml
from conftest import PROJECT

from scripts.manifest import DataError  # noqa: F401  (the package imports without TensorFlow)

RULE = re.compile(r"^rule (\w+):(.*?)(?=^rule |\Z)", re.S | re.M)


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (PROJECT / "requirements.txt").read_text().splitlines():
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
