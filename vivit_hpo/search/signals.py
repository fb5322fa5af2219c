"""The stop signals of the study's processes: a worker's and the coordinator's.

A worker (:class:`StopControl`) turns SIGINT, SIGTERM and SIGHUP into a clean stop: the running
trial is failed and re-enqueued to resume from its last checkpoint. Its own threads stop the
running trial alone through it: the heartbeat thread when the heartbeat is lost
(:class:`TrialLost`), the watchdog when training stalls (:class:`TrialStalled`; see
:mod:`vivit_hpo.search.watchdog`). The coordinator (:func:`stop_on_signals`) only notes the
signal and stops its workers in order.

None of these is raised in the middle of an import: a module whose import an exception cuts
short stays broken in the process (a submodule it had loaded stays in ``sys.modules``, and every
later import of the module then fails), and a worker that carries on after a lost trial would
fail every trial it claims. The raise waits until the import is done.
"""

from __future__ import annotations

import _thread
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = [
    "LOST_SIGNAL",
    "STOP_SIGNALS",
    "StopControl",
    "TrialLost",
    "TrialStalled",
    "stop_on_signals",
]

_log = logging.getLogger(__name__)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
LOST_SIGNAL = signal.SIGUSR1  # StopControl.abandon's own, raised in the process itself
_RETRY_S = 0.05  # how soon a raise put off by an import is tried again


def _importing(frame: FrameType | None) -> bool:
    """Whether ``frame`` (the interrupted code) runs inside an import."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


class TrialLost(BaseException):
    """The running trial was given up by its own worker: its heartbeat could not be written
    for so long that another process may soon fail it as stale and resume it elsewhere."""


class TrialStalled(BaseException):
    """The running trial made no training progress for ``heartbeat.stall_s`` (a hang: see
    :mod:`vivit_hpo.search.watchdog`); the node's fault, not the config's."""


class StopControl:
    """Turns SIGINT, SIGTERM and SIGHUP into a clean stop (Ctrl-C, ``docker stop``, SLURM's
    preemption or time-limit signal, a closed terminal), and a lost heartbeat into the stop of
    the running trial alone.

    While training (inside :meth:`interruptible`) a signal raises ``KeyboardInterrupt`` at once;
    anywhere else (a storage call half done) it only sets :attr:`requested`, which the worker
    checks at the next safe point. A second signal during the cleanup is ignored.
    """

    def __init__(self) -> None:
        self.requested = False
        self.lost: str | None = None  # why the running trial was given up (see abandon)
        self.stalled: str | None = None  # why the running trial is stalled (see stall)
        self.stall_taken = threading.Event()  # set when TrialStalled was raised in the trial
        self._interruptible = False
        self._installed = False

    @property
    def installed(self) -> bool:
        """Whether the handlers are installed (this process is a worker of its own)."""
        return self._installed

    def install(self) -> None:
        """Install the handlers (main thread only)."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)
        signal.signal(LOST_SIGNAL, self._handle_lost)
        self._installed = True

    def abandon(self, reason: str) -> None:
        """Give up the running trial (from any thread): :class:`TrialLost` is raised in the
        main thread at once while it trains, else when it next enters :meth:`interruptible`.
        Its own signal, so that a stop signal arriving meanwhile is never taken for it."""
        self.lost = reason
        if self._installed:
            _thread.interrupt_main(LOST_SIGNAL)  # runs _handle_lost in the main thread

    def stall(self, reason: str) -> None:
        """Stop the running trial as stalled (from the watchdog's thread): :class:`TrialStalled`
        is raised in the main thread while it trains. A real signal to the main thread, not
        ``interrupt_main``, so that a blocking wait there (a lock, a queue) is woken too."""
        self.stalled = reason
        if self._installed and (ident := threading.main_thread().ident) is not None:
            signal.pthread_kill(ident, LOST_SIGNAL)

    def _raise_given_up(self) -> None:
        if self.stalled is not None:
            self.stall_taken.set()
            raise TrialStalled(self.stalled)
        if self.lost is not None:
            raise TrialLost(self.lost)

    def _later(self) -> None:
        """Try the raise again shortly (the main thread is importing a module now)."""
        ident = threading.main_thread().ident
        if ident is not None:
            timer = threading.Timer(_RETRY_S, signal.pthread_kill, (ident, LOST_SIGNAL))
            timer.daemon = True
            timer.start()

    def _handle_lost(self, signum: int, frame: FrameType | None) -> None:
        # abandon()'s and stall()'s, or a raise put off by an import (a stray SIGUSR1 with
        # nothing to raise is ignored); outside training, interruptible() raises it next time.
        pending = self.requested or self.lost is not None or self.stalled is not None
        if not (pending and self._interruptible):
            return
        if _importing(frame):
            self._later()
            return
        self._interruptible = False
        if self.requested:
            raise KeyboardInterrupt
        self._raise_given_up()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = not self.requested
        self.requested = True
        if first:
            _log.warning("stop requested (%s)", signal.Signals(signum).name)
        if self._interruptible:
            if _importing(frame):
                self._later()
                return
            self._interruptible = False
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        if self.requested:
            raise KeyboardInterrupt
        self._raise_given_up()
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT, SIGTERM or SIGHUP while the block runs (main thread only; the
    previous handlers are put back after it).

    The handler only sets the event, so a signal never cuts a worker's start or the stopping
    of the workers in half; the loop stops the workers at its next check, at once.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
