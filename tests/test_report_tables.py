"""The report reads the aggregate stage's csv tables with booleans as booleans and
renders them: the learning curve's "beats?" column says yes, no or – (not compared)."""

from __future__ import annotations

import json

import pandas as pd
from test_field_questions import curve_study  # noqa: F401 (a fixture)

from scripts import fsutil, stages
from scripts.layout import TABLES
from scripts.report import read_tables


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


def test_the_learning_curve_table_says_yes_no_or_not_compared(curve_study, tmp_path):  # noqa: F811
    plan_path = tmp_path / "plan.json"
    fsutil.write_json(plan_path, curve_study)
    tables = {name: str(tmp_path / name.replace("_", "-")) + (".json" if name == "verdict" else ".csv")
              for name in TABLES}
    stages.aggregate(str(plan_path), tables)
    stages.report(str(plan_path), tables, str(tmp_path / "report.html"))
    learning = (tmp_path / "report.html").read_text().split('<table class="learning">')[1].split("</table>")[0]
    rows = {row.split('<td class="l">')[1].split("</td>")[0] + " " + row.split("<td>")[1].split("</td>")[0]:
            row.split('<td class="')[-1].split("</td>")[0] for row in learning.split("<tr>")[2:]}
    assert rows["vgg16 · frozen · weights imagenet 0.25"] == 'ok">yes'  # beats the baseline at 25%
    assert rows["vgg16 · frozen · weights imagenet 1.00"] == '">no'
    assert rows["scratch_cnn · scratch 0.25"] == '">–'  # the baseline is not compared with itself
    assert json.loads((tmp_path / "verdict.json").read_text())["datasets"]["tiny"]["learning_curve"]
