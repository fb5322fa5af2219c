"""Test-only: a worker whose training hangs, as a CUDA hang or a deadlocked data loader does.

On ``PYTHONPATH`` (tests/search/test_stall.py puts this folder there), Python imports this
module at the start of every process. With ``VIVIT_HPO_TEST_HANG`` set, a trainer hangs after
its first epoch of the process: ``wait`` blocks the main thread in a lock (a signal wakes it);
``deaf`` also blocks the watchdog's signal first (a hang inside a CUDA call, which no signal
reaches). Nothing happens without the variable.
"""

from __future__ import annotations

import os
import signal
import threading

_MODE = os.environ.get("VIVIT_HPO_TEST_HANG")

if _MODE:
    from vivit_hpo.training import loop

    _run_epoch = loop.Trainer._run_epoch
    _done: list[int] = []

    def _hanging(self: loop.Trainer) -> loop.EpochReport:
        if _done:
            if _MODE == "deaf":
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
            threading.Event().wait()  # for ever
        _done.append(1)
        return _run_epoch(self)

    loop.Trainer._run_epoch = _hanging  # type: ignore[method-assign]
