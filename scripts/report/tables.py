"""What the report reads: the aggregate stage's tables."""

from __future__ import annotations

import pandas as pd


def of_dataset(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """The rows of dataset ``name`` of an aggregate table (a table without rows has no columns)."""
    return frame[frame["dataset"] == name] if len(frame) else frame
