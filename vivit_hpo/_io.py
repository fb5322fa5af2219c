"""The one atomic file writer: a reader sees the old file or the new one, never half of it.

Every file the project writes in place of another (checkpoints, run and study files, reports,
session files) goes through :func:`atomic_write`: the bytes go to a temporary file in the same
folder, are flushed and fsynced, and the file is renamed over the target, so a crash or a power
cut at any point leaves either the old file or the whole new one. The new file gets the
permissions a plain ``open(path, "w")`` would give it (0666 less the umask), not the 0600 of a
temporary file. :func:`atomic_dir` does the same for a whole folder of files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = ["atomic_dir", "atomic_path", "atomic_write", "atomic_write_bytes", "atomic_write_text"]


def _umask() -> int:
    """The process's umask, read without changing it where the OS allows: setting it to read
    it back would give files other threads create meanwhile (a heartbeat, a data thread)
    world-writable permissions."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o077)  # elsewhere: the briefest change, to the strictest mask
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that needs a name (h5py, numpy); renamed
    onto ``path`` (synced, with a plain file's permissions) when the block ends without an
    error, removed otherwise. ``suffix`` ends the temporary name (``np.savez`` wants ``.npz``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _sync_folder(path.parent)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """A temporary folder beside ``path`` to fill; renamed onto ``path`` (with a plain folder's
    permissions, not the 0700 of a temporary one) when the block ends without an error, removed
    otherwise: a reader sees no folder or the whole one, never half of it.

    Raises:
        OSError: ``path`` is there by then and not an empty folder (nothing is replaced).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _sync_folder(path.parent)


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` through ``write(f)`` on a binary file, atomically (see the module).

    Raises:
        Whatever ``write`` or the OS raises; the target is then untouched and no temporary file
        is left behind.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


def _sync_folder(folder: Path) -> None:
    """Sync a folder, so that a rename in it survives a power cut (where the OS can)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass  # some file systems cannot sync a folder; the file itself is synced
    finally:
        os.close(dir_fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
