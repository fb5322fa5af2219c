"""The progress watchdog: a trial whose training stopped moving is the node's fault.

A worker's heartbeat thread beats whatever the training does, so a hung trial (a CUDA call
that never returns, a deadlocked data loader) would keep its heartbeat, its worker and its
slot for ever. :class:`StallWatchdog` watches the trial's :class:`Progress` (marked by every
training step and every epoch report) instead: with none for ``heartbeat.stall_s``, it calls
``on_stall`` (the worker stops vouching for the trial and raises the stall in its main thread,
which re-enqueues the trial as an infrastructure error and stops the worker); if the main
thread has not taken it ``answer_s`` later (it hangs where no signal reaches), ``on_hung``
(the worker hands the trial back from this thread and exits).

Waiting for the database is no hang: the time the trial's thread spends in a storage wait
(:data:`~vivit_hpo.search.storage.STORAGE_WAITS`: a retried call, the hand-back that waits out
an outage) counts as progress, so an outage longer than ``stall_s`` stops no worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from vivit_hpo.search.storage import STORAGE_WAITS

__all__ = ["Progress", "StallWatchdog", "stall_reason"]

_log = logging.getLogger(__name__)


class Progress:
    """When the running trial last made progress (``time.monotonic()``); thread-safe enough:
    one writer (the training thread), one reader, a float assignment."""

    def __init__(self) -> None:
        self._at = time.monotonic()

    def mark(self) -> None:
        self._at = time.monotonic()

    def idle_s(self) -> float:
        return time.monotonic() - self._at


def stall_reason(idle_s: float, stall_s: float) -> str:
    """The one line a stalled trial fails with: what happened and what to do."""
    return (
        f"stalled: no training step for {idle_s:.0f} s (heartbeat.stall_s={stall_s:g}), a hang "
        "in the GPU or the data loader; check the GPU (nvidia-smi, the kernel log) and the data "
        "mount, or raise heartbeat.stall_s if a step or a validation pass takes that long"
    )


class StallWatchdog:
    """Watch ``progress`` in a daemon thread while a trial runs (a context manager entered by
    the trial's thread, whose waits for the database count as progress).

    Args:
        progress: the trial's progress, marked as it trains (marked again on entering).
        stall_s: seconds without progress after which the trial is stalled.
        on_stall: called once with :func:`stall_reason` when it stalls.
        answered: set by the main thread when it took the stall (raised it in the trial).
        on_hung: called with the reason when ``answered`` is not set ``answer_s`` after
            ``on_stall``.
        answer_s: how long the main thread has to take the stall.
    """

    def __init__(
        self,
        progress: Progress,
        stall_s: float,
        *,
        on_stall: Callable[[str], None],
        answered: threading.Event,
        on_hung: Callable[[str], None],
        answer_s: float,
    ) -> None:
        self.progress = progress
        self.stall_s = stall_s
        self.on_stall = on_stall
        self.answered = answered
        self.on_hung = on_hung
        self.answer_s = answer_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall-watchdog", daemon=True)
        self._trial_thread = threading.get_ident()

    def idle_s(self) -> float:
        """Seconds since the trial last made progress or last waited for the database."""
        return min(self.progress.idle_s(), STORAGE_WAITS.since(self._trial_thread))

    def _run(self) -> None:
        poll = min(1.0, self.stall_s / 4)
        while not self._stop.wait(poll):
            idle = self.idle_s()
            if idle <= self.stall_s:
                continue
            reason = stall_reason(idle, self.stall_s)
            _log.error("the running trial %s", reason)
            self.on_stall(reason)
            if not self.answered.wait(self.answer_s) and not self._stop.is_set():
                _log.error("the main thread did not take the stall in %.0f s", self.answer_s)
                self.on_hung(reason)
            return

    def __enter__(self) -> StallWatchdog:
        self._trial_thread = threading.get_ident()
        self.progress.mark()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
