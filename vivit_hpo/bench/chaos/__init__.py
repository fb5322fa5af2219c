"""Chaos: a study run by ``vivit-hpo run`` on a private PostgreSQL while workers are killed, the
coordinator is stopped and started again and the database goes away, then checked.

:func:`run_chaos` runs ``vivit-hpo run NAME --spec S --workers N`` (CPU) as a subprocess in a
fresh sandbox (``HOME``, ``VIVIT_HPO_HOME``, the working directory and ``TMPDIR`` inside it, the
artifacts root too) and plays a :class:`ChaosEvent` schedule against it, one event after another:

- ``kill``: SIGKILL a worker (a child process of ``run``, found in ``/proc``), preferably one
  whose trial has reported an epoch, so that its retry must resume from a checkpoint;
- ``restart``: SIGTERM ``run`` (it stops its workers, which re-enqueue their trials), wait for
  it to exit and start the same command again: it must resume the study;
- ``outage``: stop the PostgreSQL server for ``duration_s`` seconds, then start it again.

Whenever ``run`` exits before the study is done (it may give up during an outage) it is started
again. It stops when the study is done, or at the hard deadline. Then it checks
(:class:`ChaosResult`):

- ``budget``: the logical trials in a final state are exactly ``n_trials`` (a retried failure
  counts once, through its retry: :func:`~vivit_hpo.search.study.progress`);
- ``final``: no trial is left RUNNING or WAITING;
- ``no-overlap``: no logical trial had two workers training it at the same time (from the
  per-epoch records, :data:`~vivit_hpo.search.record.EPOCHS_FILE`, of every trial folder);
- ``epochs-recorded``: every epoch of a COMPLETE trial's metrics has a record;
- ``values``: every COMPLETE trial's value is its run folder's best validation BPS
  (``metrics.json``);
- ``sandbox``: nothing was written in the sandbox outside the artifacts root, and the data
  folders read by the study are unchanged;
- ``lost``: no logical trial ended FAIL (every trial interrupted by the chaos was retried).

``vivit-hpo bench chaos`` runs it as a soak, study after study, for as long as asked.

The modules: :mod:`.plan` (the events and the schedules), :mod:`.driver` (``run`` in its
sandbox and the events played), :mod:`.checks`, :mod:`.result` (what a run returns),
:mod:`.soak`, and the helpers :mod:`.procs` (processes from ``/proc``) and :mod:`.sandbox`.
"""

from __future__ import annotations

from vivit_hpo.bench.chaos.checks import overlapping_epochs
from vivit_hpo.bench.chaos.driver import run_chaos
from vivit_hpo.bench.chaos.plan import ChaosEvent, bounded_plan, random_plan, tiny_spec_tree
from vivit_hpo.bench.chaos.result import ChaosResult, Check, Outage
from vivit_hpo.bench.chaos.soak import SoakResult, run_soak

__all__ = [
    "ChaosEvent",
    "ChaosResult",
    "Check",
    "Outage",
    "SoakResult",
    "bounded_plan",
    "overlapping_epochs",
    "random_plan",
    "run_chaos",
    "run_soak",
    "tiny_spec_tree",
]
