"""The one atomic writer: old file or whole new file, a plain file's permissions, no litter."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import h5py
import numpy as np
import pytest

from vivit_hpo._io import atomic_path, atomic_write, atomic_write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("old")

    def half(f: object) -> None:
        f.write(b"half of the new")  # type: ignore[attr-defined]
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_the_new_file_has_the_permissions_of_a_plain_open(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        (tmp_path / "b.txt").write_text("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o644  # not mkstemp's 0600


def test_a_path_for_a_named_writer_is_renamed_only_when_the_block_ends(tmp_path: Path) -> None:
    target = tmp_path / "s.h5"
    with atomic_path(target) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("x", data=np.arange(3))
        assert not target.exists()  # nobody sees it before it is whole
    with h5py.File(target) as f:
        assert f["x"][:].tolist() == [0, 1, 2]
    with pytest.raises(KeyError), atomic_path(target) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("y", data=np.arange(2))
        raise KeyError("stopped")
    with h5py.File(target) as f:
        assert list(f) == ["x"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]
