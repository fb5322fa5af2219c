"""Chaos: a study run by ``vivit-hpo run`` on a private PostgreSQL while workers are killed, the
coordinator is stopped and started again, the database goes away, a worker hangs, a node fails
every trial and a checkpoint is torn, beside a same-named study in another storage; then checked.

:func:`run_chaos` runs ``vivit-hpo run NAME --spec S --workers N`` (CPU) as a subprocess in a
fresh sandbox (``HOME``, ``VIVIT_HPO_HOME``, the working directory and ``TMPDIR`` inside it, the
artifacts root too) and plays a :class:`ChaosEvent` schedule against it, one event after
another, each when the state it needs is observed (a trial mid-way, a trial at an odd epoch, a
trial left to claim, a worker's log line), never at a guessed moment:

- ``kill``: SIGKILL a worker (a child process of ``run``, found in ``/proc``), preferably one
  whose trial has reported an epoch, so that its retry must resume from a checkpoint;
- ``restart``: SIGTERM ``run`` (it stops its workers, which re-enqueue their trials), wait for
  it to exit and start the same command again: it must resume the study;
- ``outage``: stop the PostgreSQL server for ``duration_s`` seconds, then start it again;
- ``give-up``: stop it until a worker gave up a storage call and waits for the database to
  hand its trial back (past the give-up time, ``give_up_s``);
- ``hang``: start a worker beside ``run``'s whose training hangs after its first epoch
  (:func:`~vivit_hpo.testing.faults.hang_env`);
- ``bad-node``: start a worker beside ``run``'s that can write no file past 40 KiB
  (:func:`~vivit_hpo.testing.faults.file_size_limit`): every checkpoint fails, an
  infrastructure error;
- ``torn``: freeze (SIGSTOP) a worker whose trial's ``last.pt`` holds an odd epoch >= 3,
  SIGKILL it, then tear that ``last.pt`` (:func:`~vivit_hpo.testing.faults.tear`).

With ``twin_tree``, a twin study (the same name, in another database of the server, on the same
artifacts root) runs alongside under a ``run`` of its own. Whenever ``run`` exits before the
study is done (it may give up during an outage) it is started again. It stops when the study
(and the twin's) is done, or at the hard deadline. Then it checks (:class:`ChaosResult`):

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
- ``lost``: no logical trial ended FAIL (every trial interrupted by the chaos was retried);
- ``resumed``, ``workers``, and for the faults played ``give-up``, ``hang``, ``bad-node``,
  ``torn`` and ``twin``: see :mod:`.faults_checks`.

``vivit-hpo bench chaos`` runs it as a soak, study after study, for as long as asked.

The modules: :mod:`.plan` (the events and the schedules), :mod:`.driver` (the processes and
the study as the database shows it), :mod:`.events` (each event played), :mod:`.runner`
(:func:`run_chaos`), :mod:`.checks` and :mod:`.faults_checks`, :mod:`.result` (what a run
returns), :mod:`.soak`, and the helpers :mod:`.procs` (processes from ``/proc``) and
:mod:`.sandbox`.
"""

from __future__ import annotations

from vivit_hpo.bench.chaos.checks import overlapping_epochs
from vivit_hpo.bench.chaos.plan import (
    ChaosEvent,
    bounded_plan,
    faults_plan,
    random_plan,
    tiny_spec_tree,
)
from vivit_hpo.bench.chaos.result import ChaosResult, Check, Node, Outage, Torn
from vivit_hpo.bench.chaos.runner import run_chaos
from vivit_hpo.bench.chaos.soak import SoakResult, run_soak

__all__ = [
    "ChaosEvent",
    "ChaosResult",
    "Check",
    "Node",
    "Outage",
    "SoakResult",
    "Torn",
    "bounded_plan",
    "faults_plan",
    "overlapping_epochs",
    "random_plan",
    "run_chaos",
    "run_soak",
    "tiny_spec_tree",
]
