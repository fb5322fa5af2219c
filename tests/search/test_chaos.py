"""Chaos: ``vivit-hpo run`` with 4 CPU workers on a private PostgreSQL while workers are
SIGKILLed, ``run`` is SIGTERMed and started again and the database stops twice (longer than the
heartbeat grace period, and briefly); then every check of :mod:`vivit_hpo.bench.chaos`. Then
the faults of a node and of the storage, in a second study: a node whose every trial raises an
infrastructure error, a worker that hangs, a torn ``last.pt``, an outage past the give-up time,
and a twin (a same-named study in another storage on the same artifacts root). And the overlap
check itself on hand-made records."""

from __future__ import annotations

from pathlib import Path

import pytest
from search_helpers import tiny_spec_tree

from vivit_hpo.bench.chaos import (
    ChaosResult,
    bounded_plan,
    faults_plan,
    overlapping_epochs,
    run_chaos,
)
from vivit_hpo.bench.chaos import tiny_spec_tree as chaos_spec_tree
from vivit_hpo.search.record import EpochRecord, append_epoch, read_epochs
from vivit_hpo.testing.pgserver import PostgresServer

GRACE_S = 8


def _report(result: ChaosResult) -> str:
    """Why a chaos run failed: every check's verdict, the driver's notes, the states."""
    return "\n".join(
        [
            *(f"{c.name}: {'ok' if c.ok else 'FAILED'}: {c.detail}" for c in result.checks),
            *result.notes,
            f"states {result.states}, run exit codes {result.run_exit_codes}",
        ]
    )


def _rec(trial: int, epoch: int, worker: str, start: float, end: float) -> EpochRecord:
    return EpochRecord(trial=trial, epoch=epoch, worker=worker, start=start, end=end)


def test_overlap_check_finds_two_workers_on_one_trial_at_once() -> None:
    sequential = [
        _rec(0, 1, "vm:1", 0.0, 1.0),
        _rec(0, 2, "vm:1", 1.0, 2.0),
        _rec(3, 3, "vm:2", 5.0, 6.0),  # trial 3 retries trial 0, after it: fine
        _rec(1, 1, "vm:3", 0.5, 1.5),  # another trial at the same time: fine
    ]
    roots = {0: 0, 1: 1, 3: 0}
    assert overlapping_epochs(sequential, roots) == []
    # The retry's worker started while the first one was still training epoch 2.
    clash = _rec(3, 3, "vm:2", 1.5, 2.5)
    assert overlapping_epochs([*sequential, clash], roots) == [(sequential[1], clash)]
    # Without the retry chain they are two trials: no clash.
    assert overlapping_epochs([*sequential, clash], {}) == []
    # One worker's epochs never clash with each other, and duplicates count once.
    assert overlapping_epochs([sequential[0], sequential[0]], roots) == []


def test_epoch_records_append_and_read_back(tmp_path: Path) -> None:
    a, b = _rec(2, 1, "vm:7", 1.0, 2.0), _rec(2, 2, "vm:7", 2.0, 3.0)
    append_epoch(tmp_path, a)
    append_epoch(tmp_path, b)
    with open(tmp_path / "epochs.jsonl", "a") as f:
        f.write('{"trial": 2, "epo')  # torn by a crash mid-write
    assert read_epochs(tmp_path) == [a, b]
    assert read_epochs(tmp_path / "missing") == []


@pytest.mark.slow
def test_a_study_survives_kills_restarts_and_outages(
    private_pg: PostgresServer, sim_dir: Path, tmp_path: Path
) -> None:
    tree = tiny_spec_tree(
        sim_dir,
        tmp_path / "unused",  # the driver puts the artifacts in its sandbox
        # Long enough that every event lands mid-study: validation on a fixed 32-bin subset
        # made a trial quicker, and 12 trials of 6 epochs could end before the restart.
        epochs=8,
        budget={"n_trials": 20},
        sampler={"name": "random", "seed": 0},
        pruner={"name": "none"},  # every trial trains its 8 epochs: the events land mid-study
        space={
            "embed_dim": {"choices": [16, 24], "to": "model.core.embed_dim"},
            "lr": {"low": 1e-3, "high": 1e-2, "log": True, "to": "train.lr"},
        },
        heartbeat={"interval_s": 1, "grace_s": GRACE_S, "max_retry": 10},
    )
    result = run_chaos(
        private_pg,
        tree,
        name="chaos-test",
        work=tmp_path / "chaos",
        workers=4,
        plan=bounded_plan(GRACE_S),
        deadline_s=420,
        seed=0,
    )
    report = _report(result)
    assert result.finished, report
    assert result.skipped == (), report  # every event landed before the study was done
    assert result.kills == 2 and result.run_restarts == 1, report
    assert [o.long for o in result.outages] == [True, False], report
    assert {c.name: c.ok for c in result.checks} == {
        "budget": True,
        "final": True,
        "no-overlap": True,
        "epochs-recorded": True,
        "values": True,
        "sandbox": True,
        "lost": True,
        "resumed": True,
        "workers": True,
    }, report
    assert result.lost == 0 and result.scratch_resumes == 0, report


@pytest.mark.slow
def test_a_study_survives_a_hang_a_bad_node_a_torn_checkpoint_and_a_give_up(
    private_pg: PostgresServer, sim_dir: Path, tmp_path: Path
) -> None:
    # 3 workers of `run` beside the twin's one and the two faulty nodes: the suite's 2 cores.
    result = run_chaos(
        private_pg,
        # stall_s 60 (the spec's): far above a trial's setup on a loaded machine (the hang waits
        # it out; a false stall elsewhere fails `workers`).
        chaos_spec_tree(sim_dir, n_trials=12, epochs=8, grace_s=GRACE_S),
        name="faults-test",
        work=tmp_path / "chaos",
        workers=3,
        plan=faults_plan(),
        deadline_s=600,
        seed=0,
        give_up_s=4,  # a storage call gives up after ~4 s: the give-up outage lasts ~8 s
        twin_tree=chaos_spec_tree(sim_dir, n_trials=2, epochs=3, grace_s=GRACE_S, seed=1),
    )
    report = _report(result)
    assert result.finished and result.skipped == (), report
    assert [n.kind for n in result.nodes] == ["bad-node", "hang"], report
    assert len(result.torn) == 1 and [o.give_up for o in result.outages] == [True], report
    assert result.twin, report
    assert {c.name: c.ok for c in result.checks} == {
        "budget": True,
        "final": True,
        "no-overlap": True,
        "epochs-recorded": True,
        "values": True,
        "sandbox": True,
        "lost": True,
        "resumed": True,
        "workers": True,
        "give-up": True,
        "hang": True,
        "bad-node": True,
        "torn": True,
        "twin": True,
    }, report
    assert result.lost == 0 and result.scratch_resumes == 0, report
