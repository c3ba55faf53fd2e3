"""The report reads the aggregate stage's csv tables with booleans as booleans (the
rendered "beats?" column: tests/workflow/test_field_questions.py)."""

from __future__ import annotations

import pandas as pd

from scripts.common import fsutil
from scripts.report.tables import read_tables


def test_boolean_columns_are_read_as_true_false_or_none(tmp_path):
    """pandas alone reads a column of True and empty cells as True and NaN, and an
    all-empty column as floats."""
    paths = {"learning_curve": tmp_path / "curve.csv", "runs": tmp_path / "runs.csv", "verdict": tmp_path / "v.json"}
    fsutil.write_csv(paths["learning_curve"], pd.DataFrame({"model": ["a", "b", "c"], "beats": [True, None, False]}))
    fsutil.write_csv(paths["runs"], pd.DataFrame({"status": ["missing"] * 2, "cam_informative": [None, None]}))
    fsutil.write_json(paths["verdict"], {})
    tables = read_tables({name: str(path) for name, path in paths.items()})
    beats = list(tables["learning_curve"]["beats"])
    assert beats == [True, None, False] and all(b is None or type(b) is bool for b in beats)
    assert list(tables["runs"]["cam_informative"]) == [None, None]
