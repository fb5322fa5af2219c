"""A running trial's heartbeat, which outlives database errors and notices when it is lost."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import optuna

from vivit_hpo.search.storage._retry import CONNECTIVITY, describe, is_transient

__all__ = ["Heartbeat"]

_log = logging.getLogger(__name__)


class Heartbeat:
    """Record a running trial's heartbeat every ``interval`` seconds in a daemon thread.

    Optuna's own heartbeat thread dies on the first database error, after which the trial would
    be failed as stale while it still runs; this one logs transient errors and keeps beating.

    When no beat has been written for ``lost_after_s`` (the grace period less one interval:
    before any other process may call the trial stale), a watchdog calls ``on_lost`` once with
    the reason: the worker then stops the trial and leaves it to be failed and resumed from its
    last checkpoint, instead of training on while another worker resumes it. Use as a context
    manager around the trial.
    """

    def __init__(
        self,
        storage: optuna.storages.RDBStorage,
        trial_id: int,
        interval: float,
        *,
        lost_after_s: float | None = None,
        on_lost: Callable[[str], None] | None = None,
    ):
        self.storage = storage
        self.trial_id = trial_id
        self.interval = interval
        self.lost_after_s = lost_after_s
        self.on_lost = on_lost
        self._last_beat = time.monotonic()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"heartbeat-{trial_id}", daemon=True)
        ]
        if lost_after_s is not None and on_lost is not None:
            self._threads.append(
                threading.Thread(target=self._watch, name=f"watchdog-{trial_id}", daemon=True)
            )

    def _beat(self) -> None:
        try:
            self.storage.record_heartbeat(self.trial_id)
            self._last_beat = time.monotonic()
        except Exception as e:
            transient = is_transient(e)
            if transient:
                CONNECTIVITY.mark_down()
            level = logging.WARNING if transient else logging.ERROR
            _log.log(level, "heartbeat of trial id %d failed: %s", self.trial_id, describe(e))

    def _run(self) -> None:
        wait = self.interval
        while not self._stop.wait(wait):
            self._beat()
            # After a failed beat, try again sooner: the watchdog counts from the last success.
            failing = time.monotonic() - self._last_beat > self.interval
            wait = min(self.interval, 2.0) if failing else self.interval

    def _watch(self) -> None:
        assert self.lost_after_s is not None and self.on_lost is not None
        while not self._stop.wait(min(1.0, self.interval)):
            silent = time.monotonic() - self._last_beat
            if silent > self.lost_after_s:
                _log.warning(
                    "no heartbeat written for %.0f s; stopping trial id %d", silent, self.trial_id
                )
                self.on_lost(
                    f"no heartbeat written for {silent:.0f} s (the database is out of reach); "
                    "left to resume from its last checkpoint"
                )
                return

    def silence(self) -> None:
        """Stop beating now: this worker no longer vouches for the trial (it stalled)."""
        self._stop.set()

    def __enter__(self) -> Heartbeat:
        # The first beat was written by the claim, under the claim lock (worker.claim_trial).
        self._last_beat = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=max(self.interval, 5.0) + 30.0)
