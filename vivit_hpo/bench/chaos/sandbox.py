"""The sandbox of a chaos run: where its processes put their trial folders, and what its
files were at a moment (to find what changed)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["artifacts_env", "snapshot"]


@contextlib.contextmanager
def artifacts_env(root: Path) -> Iterator[None]:
    """Resolve trial folders as the run's processes do (``$VIVIT_HPO_ARTIFACTS`` = the root)."""
    old = os.environ.get("VIVIT_HPO_ARTIFACTS")
    os.environ["VIVIT_HPO_ARTIFACTS"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("VIVIT_HPO_ARTIFACTS", None)
        else:
            os.environ["VIVIT_HPO_ARTIFACTS"] = old


def snapshot(folders: Sequence[Path]) -> dict[str, tuple[int, int]]:
    """``{path: (size, mtime)}`` of every file and folder under ``folders``."""
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            st = p.lstat()
            out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out
