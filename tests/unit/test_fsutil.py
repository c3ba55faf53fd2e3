"""Atomic writes: complete files only, readable like any other file the user writes."""

from __future__ import annotations

import os

import pytest

from scripts.common.fsutil import atomic_path, file_digest, write_text


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_follow_the_umask_not_mkstemps_0600(tmp_path, umask, mode):
    """A group-shared cluster folder needs group-readable results: mkstemp's 0600 would
    hide them. The module reads the umask once, at import, so each case imports it anew."""
    import importlib

    import scripts.common.fsutil

    previous = os.umask(umask)
    try:
        module = importlib.reload(scripts.common.fsutil)
        module.write_text(tmp_path / "report.html", "x")
    finally:
        os.umask(previous)
        importlib.reload(scripts.common.fsutil)
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == mode


def test_a_failed_write_leaves_neither_target_nor_temporary_file(tmp_path):
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(tmp_path / "model.weights.h5") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    write_text(tmp_path / "metrics.json", "finished")
    with pytest.raises(OSError):
        with atomic_path(tmp_path / "metrics.json") as tmp:
            tmp.write_text("half")
            raise OSError("disk full")
    assert (tmp_path / "metrics.json").read_text() == "finished"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_file_digest_by_name(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert file_digest(tmp_path / "f") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert file_digest(tmp_path / "f", "md5") == "900150983cd24fb0d6963f7d28e17f72"
