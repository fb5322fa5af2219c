"""The live view of ``vivit-hpo run``: a study's counts and its workers, redrawn as they change.

:func:`~vivit_hpo.search.coordinator.run_study` draws nothing; it reports to a callback, and
:class:`LiveView` is the one that draws, for the CLI's ``run``, the benchmarks and the Python
API's ``run_study(console=...)`` alike (hence here, below all three, rather than in the CLI):
each :class:`~vivit_hpo.search.coordinator.RunSnapshot` in a live table while the workers run,
the final one printed, and each :class:`~vivit_hpo.search.coordinator.RunMessage` as a line.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console, Group
from rich.live import Live

from vivit_hpo._output import Column, FitTable, count, fixed, signed
from vivit_hpo.search.coordinator import RunEvent, RunMessage, RunSnapshot

__all__ = ["LiveView", "run_table"]


def run_table(snap: RunSnapshot) -> Group:
    """The study's counts, one row per worker, and the snapshot's note."""
    p = snap.progress
    t = FitTable(
        [
            Column("running", "right", priority=7),
            Column("complete", "right", priority=6),
            Column("pruned", "right", priority=3),
            Column("infeasible", "right", priority=2),
            Column("failed", "right", priority=4),
            Column("budget", "right", priority=8),
            Column("best BPS", "right", priority=9),
            Column("trials/h", "right", priority=1),
        ],
        title=f"study {snap.study}",
        title_justify="left",
        box=None,
        padding=(0, 0, 0, 2),
    )
    per_hour = p.finished / (snap.elapsed_s / 3600) if snap.elapsed_s > 1 else 0.0
    t.add_row(
        count(p.running),
        count(p.complete),
        count(p.pruned),
        count(p.infeasible),
        count(p.failed),
        f"{min(p.logical, p.n_trials)}/{p.n_trials}",
        signed(p.best_value),
        fixed(per_hour, 0),
    )
    extra = []
    if p.best_number is not None:
        extra.append(f"best trial #{p.best_number}")
    if p.retried or p.waiting:
        extra.append(f"{p.retried} retried (worker lost or stopped), {p.waiting} waiting")
    w = FitTable(
        [
            Column("worker", priority=5),
            Column("device", priority=4),
            Column("pid", priority=2),
            Column("state", priority=3, wrap=True),
            Column("restarts", priority=1),
        ],
        box=None,
    )
    for s in snap.workers:
        pid = "-" if s.pid is None else str(s.pid)
        w.add_row(str(s.index), s.device, pid, s.state, str(s.restarts))
    parts: list[FitTable | str] = [t]
    if extra:
        parts.append("; ".join(extra))
    parts.append(w)
    if snap.note:
        parts.append(snap.note)
    return Group(*parts)


class LiveView:
    """Draws a run's events on ``console``; pass it as ``run_study``'s ``progress``.

    Snapshots redraw one live table (cleared when it stops); the final snapshot is printed
    to stay; a message first stops the live table, then prints its line. Use it as a context
    manager around the run, so that the live table stops however the run ends::

        with LiveView(console) as view:
            result = run_study(name, spec, url, devices=devices, progress=view)
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self._live: Live | None = None

    def __call__(self, event: RunEvent) -> None:
        if isinstance(event, RunMessage):
            self._stop()
            self.console.print(event.text, soft_wrap=True if event.one_line else None)
        elif event.final:
            self._stop()
            self.console.print(run_table(event))
        elif self._live is None:
            self._live = Live(
                run_table(event), console=self.console, refresh_per_second=2, transient=True
            )
            self._live.start()
        else:
            self._live.update(run_table(event))

    def _stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __enter__(self) -> LiveView:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()
