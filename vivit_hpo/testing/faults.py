"""Faults that the tests and the chaos driver inject into real worker processes, each as the
real thing does it: a training that hangs or a test pass that crawls (:func:`hang_env`), a
node whose every checkpoint write fails (:func:`file_size_limit`) and a torn checkpoint file
(:func:`tear`).

Nothing in the study service imports this module.
"""

from __future__ import annotations

import os
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

__all__ = ["HANG_ENV", "HANG_MODES", "file_size_limit", "hang_env", "install_hang", "tear"]

HANG_ENV = "VIVIT_HPO_TEST_HANG"
HANG_MODES = ("wait", "deaf", "slow-test")
SLOW_TEST_BATCH_S = 0.6  # what ``slow-test`` adds to every batch of the test split
_SITE = Path(__file__).parent / "site"  # its sitecustomize.py calls install_hang at start-up


def hang_env(mode: str, env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for processes whose training hangs after their first epoch, as a CUDA hang or a
    deadlocked data loader does: every Python process started with it (the workers of a
    ``vivit-hpo run`` too) imports ``site/sitecustomize.py``, which calls :func:`install_hang`.

    Args:
        mode: ``wait`` blocks the main thread in a lock (a signal wakes it); ``deaf`` also
            blocks the watchdog's signal first (a hang inside a CUDA call, which no signal
            reaches); ``slow-test`` hangs nothing but makes every batch of the test split
            :data:`SLOW_TEST_BATCH_S` slower (a test split far larger than the validation
            subset, a loaded machine).
        env: the environment to add to (its ``PYTHONPATH`` is kept, after the hook's folder).
    """
    if mode not in HANG_MODES:
        raise ValueError(f"hang mode {mode!r}: use one of {', '.join(HANG_MODES)}")
    out = dict(env)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(_SITE), env.get("PYTHONPATH")) if p)
    out[HANG_ENV] = mode
    return out


def install_hang(mode: str) -> None:
    """Make this process's trainer hang after its first epoch, or its test passes slow (see
    :func:`hang_env`)."""
    if mode == "slow-test":
        _slow_test_batches()
        return
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


def _slow_test_batches() -> None:
    from vivit_hpo.data.session import Batch, SessionSet

    batches = SessionSet.batches

    def slow(self: SessionSet, split: str, *args: object, **kwargs: object) -> Iterator[Batch]:
        for batch in batches(self, split, *args, **kwargs):  # type: ignore[arg-type]
            if split == "test":
                time.sleep(SLOW_TEST_BATCH_S)
            yield batch

    SessionSet.batches = slow  # type: ignore[method-assign,assignment]


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
