"""Faults that the tests and the chaos driver inject into real worker processes, each as the
real thing does it: a training that hangs (:func:`hang_env`), a node whose every checkpoint
write fails (:func:`file_size_limit`) and a torn checkpoint file (:func:`tear`).

Nothing in the study service imports this module.
"""

from __future__ import annotations

import os
import resource
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = ["HANG_ENV", "HANG_MODES", "file_size_limit", "hang_env", "install_hang", "tear"]

HANG_ENV = "VIVIT_HPO_TEST_HANG"
HANG_MODES = ("wait", "deaf")
_SITE = Path(__file__).parent / "site"  # its sitecustomize.py calls install_hang at start-up


def hang_env(mode: str, env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for processes whose training hangs after their first epoch, as a CUDA hang or a
    deadlocked data loader does: every Python process started with it (the workers of a
    ``vivit-hpo run`` too) imports ``site/sitecustomize.py``, which calls :func:`install_hang`.

    Args:
        mode: ``wait`` blocks the main thread in a lock (a signal wakes it); ``deaf`` also
            blocks the watchdog's signal first (a hang inside a CUDA call, which no signal
            reaches).
        env: the environment to add to (its ``PYTHONPATH`` is kept, after the hook's folder).
    """
    if mode not in HANG_MODES:
        raise ValueError(f"hang mode {mode!r}: use one of {', '.join(HANG_MODES)}")
    out = dict(env)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(_SITE), env.get("PYTHONPATH")) if p)
    out[HANG_ENV] = mode
    return out


def install_hang(mode: str) -> None:
    """Make this process's trainer hang after its first epoch (see :func:`hang_env`)."""
    from vivit_hpo.training import loop

    run_epoch = loop.Trainer._run_epoch
    done: list[int] = []

    def hanging(self: loop.Trainer) -> loop.EpochReport:
        if done:
            if mode == "deaf":
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
            threading.Event().wait()  # for ever
        done.append(1)
        return run_epoch(self)

    loop.Trainer._run_epoch = hanging  # type: ignore[method-assign]


def file_size_limit(max_bytes: int) -> Callable[[], None]:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the process may write no file past
    ``max_bytes`` (``RLIMIT_FSIZE``; a write beyond fails with EFBIG, ``SIGXFSZ`` ignored, which
    the exec'd program inherits), as on a full disk: every checkpoint larger than that fails, an
    infrastructure error. Its log stays writable while it is smaller."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return limit


def tear(path: Path) -> int:
    """Truncate the file ``path`` to its first half, as a crash or a power cut on a file system
    that lost the order of the write and the rename leaves it. Returns the size it has now."""
    size = path.stat().st_size // 2
    with open(path, "r+b") as f:
        f.truncate(size)
    return size
