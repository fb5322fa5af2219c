"""Infrastructure errors: the node's fault, not the sampled config's.

A trial that fails because of the machine it runs on (a GPU that errs, a data file missing on
this node, a full disk, a folder it may not write) says nothing about its config, so it must not
spend the study's budget: :class:`~vivit_hpo.search.objective.TrialRunner` fails it and
re-enqueues it to resume from its last checkpoint elsewhere (outcome ``REQUEUED``), as it does
an interrupted trial. A worker that meets such errors trial after trial stops
(:data:`INFRA_EXIT_CODE`) with one line saying what is wrong and how to fix it
(:func:`stop_message`), and ``vivit-hpo run`` does not restart it (:func:`reason_in_log`).

What is one (:func:`infrastructure_error`):

- a CUDA error other than running out of memory: ``CUDA error: ...`` (an illegal memory
  access, an ECC error, a launch failure), ``CUBLAS_STATUS_...``, ``cuDNN error`` (not a
  device-side assert, an unsupported cuDNN configuration or an allocation failure: those follow
  the config);
- a session file missing or unreadable on this node
  (:class:`~vivit_hpo.errors.DataUnavailableError`, from :func:`check_data_here`), or a file
  that vanished or could not be read mid-run (ENOENT, EIO, ESTALE);
- a full disk or quota (ENOSPC, EDQUOT, EFBIG), also as torch's checkpoint writer reports it;
- a permission error (EACCES, EPERM, EROFS).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator, Sequence
from pathlib import Path

from vivit_hpo import settings
from vivit_hpo.errors import DataUnavailableError

__all__ = [
    "DEFAULT_MAX_INFRA_ERRORS",
    "INFRA_EXIT_CODE",
    "check_data_here",
    "infrastructure_error",
    "reason_in_log",
    "stop_message",
]

INFRA_EXIT_CODE = 75  # sysexits' EX_TEMPFAIL: the node failed; try again later or elsewhere
DEFAULT_MAX_INFRA_ERRORS = 3

_DISK = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large",
}
_PERMISSION = (errno.EACCES, errno.EPERM, errno.EROFS)
_GONE = (errno.ENOENT, errno.EIO, errno.ESTALE)
_ELSEWHERE = f"point artifacts.dir (or {settings.ARTIFACTS.name}) elsewhere"
_DISK_FIX = f"free space there (or raise the quota), or {_ELSEWHERE}"
_PERMISSION_FIX = f"make it writable by this worker's user, or {_ELSEWHERE}"
_FILE_FIX = "check that its file system is mounted and healthy on this node"
_DATA_FIX = "restore it or mount the data on this node, then start the worker again"
_GPU_FIX = "check the GPU (nvidia-smi, the kernel log's Xid errors) or use another GPU"

# CUDA errors that follow the config (or are running out of memory), not the device.
_CONFIG_CUDA = ("device-side assert", "ALLOC_FAILED", "CUDNN_STATUS_NOT_SUPPORTED", "BAD_PARAM")
_CUDA = (
    *("CUDA error", "CUBLAS_STATUS_", "cuDNN error", "CUDNN_STATUS_", "illegal memory access"),
    *("ECC error", "unspecified launch failure", "CUDA driver error"),
)
# What torch.save raises when the file it writes to fails (the OS error, if any, is chained).
_WRITER = ("PytorchStreamWriter", "file write failed", "iostream error", "unexpected pos")

_STOP_MARK = "infrastructure error, worker stopped"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its cause or context, and so on (each once)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def _os_reason(e: OSError) -> str | None:
    where = f" ({e.filename})" if e.filename else ""
    what = e.strerror or _first_line(e)
    if e.errno in _DISK:
        return f"{_DISK[e.errno]} writing{where or ' a file'}: {what}; {_DISK_FIX}"
    if e.errno in _PERMISSION:
        return f"no permission on{where or ' a file'}: {what}; {_PERMISSION_FIX}"
    if e.errno in _GONE and e.filename:
        return f"{e.filename} missing or unreadable on this node: {what}; {_FILE_FIX}"
    return None


def infrastructure_error(exc: BaseException) -> str | None:
    """One line (what failed; how to fix it) if ``exc`` is the node's fault, else None.

    The exception and what it was raised from are read: torch's checkpoint writer chains the
    OS's error under its own. Running out of memory is the config's (check
    :func:`~vivit_hpo.search.outcome.is_oom` first); so is every other error.
    """
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, DataUnavailableError):
            return str(e)
        if isinstance(e, OSError) and (why := _os_reason(e)) is not None:
            return why
    for e in chain:
        if not isinstance(e, RuntimeError):
            continue
        text = str(e)
        if "No space left on device" in text:
            return f"disk full: {_first_line(e)}; {_DISK_FIX}"
        if any(m in text for m in _WRITER):
            return f"writing a checkpoint failed (disk full?): {_first_line(e)}; {_DISK_FIX}"
        config = "out of memory" in text.lower() or any(m in text for m in _CONFIG_CUDA)
        if any(m in text for m in _CUDA) and not config:
            return f"GPU error: {_first_line(e)}; {_GPU_FIX}"
    return None


def check_data_here(paths: Sequence[Path]) -> None:
    """Check that the study's session files can be opened and read on this node.

    Args:
        paths: the study's ``data.paths`` (files, or folders of ``*.h5`` files).

    Raises:
        DataUnavailableError: the first path missing or unreadable here, with the OS's reason.
    """
    for p in paths:
        if p.is_dir():
            files = sorted(q for q in p.glob("*.h5") if q.is_file())
            if not files:
                raise DataUnavailableError(
                    f"data folder {p} has no *.h5 session files on this node; {_DATA_FIX}"
                )
        else:
            files = [p]
        for f in files:
            try:
                with open(f, "rb") as fh:
                    fh.read(8)
            except OSError as e:
                state = "missing" if isinstance(e, FileNotFoundError) else "unreadable"
                raise DataUnavailableError(
                    f"data file {f} {state} on this node ({e.strerror or e}); {_DATA_FIX}"
                ) from e


def stop_message(reason: str, count: int) -> str:
    """The line a worker stops with: after ``count`` trials in a row re-enqueued for
    infrastructure errors, or (``count`` 0) before taking any, its data missing here."""
    if count:
        return f"{_STOP_MARK} ({count} trials in a row re-enqueued, none spent): {reason}"
    return f"{_STOP_MARK} before taking a trial: {reason}"


def reason_in_log(path: Path) -> str | None:
    """The :func:`stop_message` in the last lines of a worker's log, or None."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64 * 1024))
            tail = f.read().decode(errors="replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        if _STOP_MARK in line:
            return line.removeprefix("error: ").strip()
    return None
