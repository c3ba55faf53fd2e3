"""Atomic writes: complete files only, readable like any other file the user writes."""

from __future__ import annotations

import os

from scripts.fsutil import atomic_path, write_text


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_writes_follow_the_umask_not_mkstemps_0600(tmp_path):
    write_text(tmp_path / "report.html", "x")
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o666 & ~current_umask()


def test_a_failed_write_leaves_neither_target_nor_temporary_file(tmp_path):
    try:
        with atomic_path(tmp_path / "model.weights.h5") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    except RuntimeError:
        pass
    assert list(tmp_path.iterdir()) == []
