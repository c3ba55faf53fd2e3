"""The package's folders are its layers: no module imports one of a higher layer or of
a sibling folder of the same layer, the import graph has no cycle, and what the rule
files import while Snakemake parses them loads no TensorFlow.

Folders, lowest first: what every step shares (common); the data, the weights files and
the Slurm site (data, weights, site); the study plan (plan); statistics (stats); training
and inference (train); the aggregate tables and the report (report); the steps and the
command line (the package's top level). A new folder must be placed in a layer here.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
PACKAGE = PROJECT / "scripts"
LAYERS = [{"common"}, {"data", "weights", "site"}, {"plan"}, {"stats"}, {"train"}, {"report"}, {""}]
LAYER = {folder: rank for rank, folders in enumerate(LAYERS) for folder in folders}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """``scripts/train/models.py`` -> ``train.models``; ``scripts/stages.py`` -> ``stages``."""
    return ".".join(path.relative_to(package).with_suffix("").parts)


def folder(module: str) -> str:
    return module.rpartition(".")[0]


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "scripts":
            base = node.module.partition(".")[2]
            found |= {f"{base}.{a.name}".lstrip(".") for a in node.names} & modules or {base}
        elif isinstance(node, ast.Import):
            found |= {a.name.partition(".")[2] for a in node.names if a.name.startswith("scripts.")}
    return found & modules


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    paths = [path for path in package.rglob("*.py") if path.name != "__init__.py"]
    modules = {module_name(path, package) for path in paths}
    return {module_name(path, package): imported_modules(path, modules) for path in paths}


def test_every_module_sits_in_a_layer_folder():
    assert {folder(module) for module in import_graph()} <= set(LAYER), "place new folders in LAYERS"
    assert {module for module in import_graph() if not folder(module)} == {"stages", "__main__"}


def test_no_module_imports_a_higher_layer_or_a_sibling_folder():
    crossing = [(module, imported) for module, imports in import_graph().items() for imported in imports
                if folder(imported) != folder(module) and LAYER[folder(imported)] >= LAYER[folder(module)]]
    assert crossing == []


def test_imports_are_acyclic():
    try:
        TopologicalSorter(import_graph()).prepare()
    except CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")


def test_the_checks_see_an_upward_import_and_a_cycle(tmp_path):
    (tmp_path / "low").mkdir()
    (tmp_path / "high").mkdir()
    (tmp_path / "low" / "a.py").write_text("def f():\n    from scripts.high import b\n")
    (tmp_path / "high" / "b.py").write_text("from scripts.low.a import f\nimport scripts.low.a\n")
    graph = import_graph(tmp_path)
    assert graph == {"low.a": {"high.b"}, "high.b": {"low.a"}}
    with pytest.raises(CycleError):
        TopologicalSorter(graph).prepare()


def planning_imports() -> list[str]:
    """The package modules the rule files import: Snakemake imports them on the login
    node at every start, while it parses the Snakefile."""
    rules = [PROJECT / "workflow" / "Snakefile", *(PROJECT / "workflow" / "rules").glob("*.smk")]
    text = "\n".join(path.read_text() for path in rules)
    found = set(re.findall(r"^\s*from (scripts\.[\w.]+) import", text, re.M))
    found |= {f"{base}.{name}" for base, name in re.findall(r"^\s*from (scripts\.\w+) import (\w+)", text, re.M)
              if (PACKAGE / base.partition(".")[2] / f"{name}.py").is_file()}
    return sorted(found)


def test_what_planning_imports_loads_no_tensorflow():
    modules = planning_imports()
    assert {"scripts.plan.config", "scripts.train.models", "scripts.common.layout"} <= set(modules)
    code = (f"import sys; sys.path.insert(0, {str(PROJECT)!r}); "
            + "; ".join(f"import {module}" for module in modules)
            + "; print(sorted({'tensorflow', 'keras'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:] + done.stdout
