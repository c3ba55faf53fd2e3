"""The package's import graph: acyclic, and no module imports one of a higher layer.

Layers, lowest first: files, paths and tracing; the domain (data, config, grid, the
backbone registry, statistics; no TensorFlow at import); training and inference
(TensorFlow); the study's tables and report; the workflow steps and the command line.
A new module must be placed in a layer here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "scripts"
LAYERS = [
    {"fsutil", "layout", "tracing"},
    # models: the backbone registry (names, stages, last conv layers); Keras only inside functions
    {"manifest", "images", "splits", "models", "grid", "config", "slurm_site", "snakemake_internals",
     "weight_files", "download", "evaluation", "stats", "external", "shortcut", "calibration", "decision"},
    {"input_pipeline", "gradcam", "inference", "runtime", "checkpoint", "objective", "probe", "predictions",
     "training", "edge_vgg16"},
    {"run_tables", "comparisons", "verdict", "aggregate", "plots", "report", "deployment"},
    {"stages", "__main__"},
]
LAYER = {module: rank for rank, modules in enumerate(LAYERS) for module in modules}


def imported_modules(path: Path) -> set[str]:
    """The package modules ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "scripts":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("scripts."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("scripts.")}
    return found


def import_graph() -> dict[str, set[str]]:
    return {path.stem: imported_modules(path) for path in PACKAGE.glob("*.py") if path.stem != "__init__"}


def test_every_module_has_a_layer():
    assert set(import_graph()) == set(LAYER), "place new modules in LAYERS; remove gone ones"


def test_no_module_imports_a_higher_layer():
    upward = [(module, imported) for module, imports in import_graph().items() for imported in imports
              if LAYER[imported] > LAYER[module]]
    assert upward == []


def test_imports_are_acyclic():
    try:
        TopologicalSorter(import_graph()).prepare()
    except CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")


def test_the_checks_see_an_upward_import_and_a_cycle(tmp_path):
    (tmp_path / "low.py").write_text("def f():\n    from scripts import high\n")
    (tmp_path / "high.py").write_text("from scripts.low import f\nimport scripts.low\n")
    graph = {path.stem: imported_modules(path) for path in tmp_path.glob("*.py")}
    assert graph == {"low": {"high"}, "high": {"low"}}
    with pytest.raises(CycleError):
        TopologicalSorter(graph).prepare()


def test_the_lower_layers_import_no_tensorflow():
    """The workflow imports these while Snakemake parses the Snakefile: no TensorFlow."""
    lower = sorted(module for module, rank in LAYER.items() if rank <= 1)
    code = (f"import sys; sys.path.insert(0, {str(PACKAGE.parent)!r}); "
            + "; ".join(f"import scripts.{module}" for module in lower)
            + "; print(sorted({'tensorflow', 'keras'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:] + done.stdout
