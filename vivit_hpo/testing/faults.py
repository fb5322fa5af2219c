"""Faults that the tests and the chaos driver inject into real worker processes, each as the
real thing does it: a training that hangs or a test pass that crawls (:func:`hang_env`), a
worker killed mid-way through ending an epoch (:func:`kill_mid_epoch_env`), a worker held at a
point of opening its study while the test stops the server (:func:`pause_open_env`), a node
whose every checkpoint write fails (:func:`file_size_limit`) and a torn checkpoint file
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
from typing import Any

__all__ = [
    "HANG_ENV",
    "HANG_MODES",
    "KILL_MID_EPOCH_ENV",
    "PAUSE_OPEN_ENV",
    "PAUSE_POINTS",
    "file_size_limit",
    "hang_env",
    "install_hang",
    "install_kill_mid_epoch",
    "install_pause_open",
    "kill_mid_epoch_env",
    "pause_open_env",
    "tear",
]

HANG_ENV = "VIVIT_HPO_TEST_HANG"
KILL_MID_EPOCH_ENV = "VIVIT_HPO_TEST_KILL_MID_EPOCH"
HANG_MODES = ("wait", "deaf", "slow-test")
PAUSE_OPEN_ENV = "VIVIT_HPO_TEST_PAUSE_OPEN"
PAUSE_POINTS = ("between-opens", "in-open")
SLOW_TEST_BATCH_S = 0.6  # what ``slow-test`` adds to every batch of the test split
_SITE = Path(__file__).parent / "site"  # its sitecustomize.py installs the faults at start-up


def _with_site(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the hook's folder first on ``PYTHONPATH`` (its own kept after it)."""
    out = dict(env)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(_SITE), env.get("PYTHONPATH")) if p)
    return out


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
    return {**_with_site(env), HANG_ENV: mode}


def kill_mid_epoch_env(epoch: int, env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for processes that SIGKILL themselves mid-way through ending their trainer's
    epoch ``epoch`` (1-based): right after the first of its two steps, the worker's record of the
    epoch (``epochs.jsonl``) and the trainer's commit of it (``metrics.json`` and checkpoints),
    whichever comes first: the state a crash between the two leaves
    (:func:`install_kill_mid_epoch`, called by ``site/sitecustomize.py``)."""
    return {**_with_site(env), KILL_MID_EPOCH_ENV: str(int(epoch))}


def install_kill_mid_epoch(epoch: int) -> None:
    """SIGKILL this process right after the first of the two steps that end its trainer's
    epoch ``epoch`` (see :func:`kill_mid_epoch_env`), in whichever order the code takes them."""
    from vivit_hpo.search import objective
    from vivit_hpo.training import loop

    append_epoch, save = objective.append_epoch, loop.Trainer._save

    def kill() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def recorded(run_dir: Path, record: Any) -> None:
        append_epoch(run_dir, record)
        if record.epoch == epoch:
            kill()

    def committed(self: loop.Trainer, *args: Any, **kwargs: Any) -> None:
        save(self, *args, **kwargs)
        if self.epoch == epoch:
            kill()

    objective.append_epoch = recorded  # the name the objective calls
    loop.Trainer._save = committed  # type: ignore[method-assign]


def pause_open_env(point: str, folder: Path, env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for workers that stop at ``point`` of opening their study, write
    ``folder/paused`` and go on once ``folder/resume`` exists (:func:`install_pause_open`,
    called by ``site/sitecustomize.py``): the test stops the server in between.

    Args:
        point: ``between-opens``: after the plain open that reads the spec, before the open
            with the heartbeat; ``in-open``: inside the open with the heartbeat, after its first
            connection, before Optuna's storage is made.
        folder: where the two marker files are (an existing folder).
        env: the environment to add to (its ``PYTHONPATH`` is kept, after the hook's folder).
    """
    if point not in PAUSE_POINTS:
        raise ValueError(f"pause point {point!r}: use one of {', '.join(PAUSE_POINTS)}")
    return {**_with_site(env), PAUSE_OPEN_ENV: f"{point}:{folder}"}


def install_pause_open(value: str) -> None:
    """Make this process pause once at the point of opening its study that ``value``
    (``POINT:FOLDER``, see :func:`pause_open_env`) names."""
    from vivit_hpo.search import worker
    from vivit_hpo.search.storage import _open

    point, folder = value.split(":", 1)
    open_storage, check_postgres = worker.open_storage, _open._check_postgres
    in_heartbeat_open: list[int] = []

    def pause() -> None:
        (Path(folder) / "paused").touch()
        while not (Path(folder) / "resume").exists():
            time.sleep(0.05)

    def opening(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("heartbeat_interval") is None:
            return open_storage(*args, **kwargs)
        if point == "between-opens":
            pause()
        in_heartbeat_open.append(1)
        try:
            return open_storage(*args, **kwargs)
        finally:
            in_heartbeat_open.clear()

    def checked(*args: Any, **kwargs: Any) -> None:
        check_postgres(*args, **kwargs)
        if point == "in-open" and in_heartbeat_open:
            pause()

    worker.open_storage = opening  # the name open_study calls
    _open._check_postgres = checked  # the name open_storage calls


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
