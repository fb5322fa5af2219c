"""The one atomic writer: old file or whole new file, a plain file's permissions, no litter."""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import h5py
import numpy as np
import pytest

import vivit_hpo._io
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


# Calls that replace a file by hand (a temporary file renamed over the target): they belong in
# vivit_hpo._io alone. ``path.rename(...)`` is one too, unless it moves a whole folder.
_BY_HAND = {
    ("os", "replace"),
    ("os", "rename"),
    ("shutil", "move"),
    ("tempfile", "mkstemp"),
    ("tempfile", "NamedTemporaryFile"),
}
# The one folder moved whole: a retry takes over its predecessor's trial folder.
_FOLDER_MOVES = {"vivit_hpo/search/outcome.py"}  # HandBack.take_over_dir


def _hand_written_replaces(tree: ast.AST, folder_moves: bool) -> list[tuple[int, str]]:
    """``(line, call)`` of each call in ``tree`` that replaces a file by hand."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        module = owner.id if isinstance(owner, ast.Name) else None
        if (module, node.func.attr) in _BY_HAND or (
            node.func.attr == "rename" and not folder_moves
        ):
            found.append((node.lineno, ast.unparse(node.func)))
    return found


def test_the_finder_finds_a_rename_by_hand() -> None:
    code = "os.replace(tmp, out)\ntmp.rename(out)\ntext.replace('a', 'b')\n"
    assert _hand_written_replaces(ast.parse(code), False) == [
        (1, "os.replace"),
        (2, "tmp.rename"),
    ]


def test_the_atomic_writer_is_the_only_module_that_replaces_files() -> None:
    package = Path(vivit_hpo._io.__file__).resolve().parent
    found = {
        f"{rel}:{line}: {call}()"
        for path in package.rglob("*.py")
        if (rel := path.relative_to(package.parent).as_posix()) != "vivit_hpo/_io.py"
        for line, call in _hand_written_replaces(
            ast.parse(path.read_text(), rel), rel in _FOLDER_MOVES
        )
    }
    assert not found, "write these through vivit_hpo._io:\n" + "\n".join(sorted(found))
