"""Seeded, stratified validation split; test data is never used for selection.

Byte-identical files are kept on the same side of the split (grouped by SHA256) so
the split itself cannot leak duplicates from train into validation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SUBSETS = ("train", "val", "test")


def make_split(
    index: pd.DataFrame, seed: int, val_fraction: float, leakage: str = "warn"
) -> pd.DataFrame:
    """Assign every image of ``index`` (path, split, label, sha256) to a subset.

    With a ``val/`` folder that folder is the validation set; otherwise a fraction of
    each class of ``train/`` is held out. ``leakage="drop"`` moves val/test images
    that are byte-identical to a training image to subset ``dropped``.
    """
    frame = index.copy()
    frame["subset"] = frame["split"]
    if not (frame["split"] == "val").any():
        rng = np.random.default_rng(seed)
        for _, rows in frame[frame["split"] == "train"].groupby("label", sort=True):
            groups = rows.groupby("sha256", sort=True).groups
            keys = list(groups)
            rng.shuffle(keys)
            wanted = max(1, round(val_fraction * len(rows)))
            taken = 0
            for key in keys:
                if taken >= wanted or len(keys) < 2:
                    break
                frame.loc[groups[key], "subset"] = "val"
                taken += len(groups[key])
    if leakage == "drop":
        train_hashes = set(frame.loc[frame["subset"] == "train", "sha256"])
        leaked = (frame["subset"] != "train") & frame["sha256"].isin(train_hashes)
        frame.loc[leaked, "subset"] = "dropped"
    return frame[["path", "label", "sha256", "split", "subset"]]

