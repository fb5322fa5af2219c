"""A trial's epoch log: one JSON line per finished epoch in its run folder (who trained it,
and when), kept across retries.

An epoch is recorded once it is validated and before it is committed (its checkpoint and
``metrics.json`` row; the trainer's ``before_commit``), so every committed epoch has a record.
A worker killed between the two leaves a record of an epoch that no checkpoint holds: its retry
trains that epoch again and records it again, later; where one record per epoch is wanted, the
last one in the file is the one that counts (:func:`latest_by_epoch`)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

EPOCHS_FILE = "epochs.jsonl"  # in the trial's run folder: one EpochRecord per finished epoch


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch of a trial: which worker (``host:pid``) trained it, when (wall-clock
    seconds since the epoch, ``time.time()``), and that epoch's own mean validation BPS (the
    trial's intermediate value is the best so far; None in records written before it was kept)."""

    trial: int
    epoch: int
    worker: str
    start: float
    end: float
    val_bps: float | None = None


def append_epoch(run_dir: Path, record: EpochRecord) -> None:
    """Append ``record`` to ``run_dir/epochs.jsonl``, flushed and fsynced: a worker killed
    afterwards loses at most the epoch it was training."""
    with open(run_dir / EPOCHS_FILE, "a") as f:
        f.write(json.dumps(asdict(record)) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_epochs(run_dir: Path) -> list[EpochRecord]:
    """The records in ``run_dir/epochs.jsonl`` (none if it is missing); a torn last line (a
    machine that lost power mid-write) is skipped."""
    try:
        lines = (run_dir / EPOCHS_FILE).read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(EpochRecord(**json.loads(line)))
        except (ValueError, TypeError):
            continue
    return out


def latest_by_epoch(records: list[EpochRecord]) -> dict[int, EpochRecord]:
    """``{epoch: its record}`` of one trial folder's ``records`` (in file order): the last
    record of an epoch recorded twice, the one whose training was committed."""
    return {r.epoch: r for r in records}


def unreported_epochs(
    history: list[dict[str, Any]], reported: dict[int, float]
) -> list[tuple[int, float]]:
    """(epoch, best validation score so far) of each epoch of a resumed run's ``history`` (its
    ``metrics.json`` rows) that the trial has no report of.

    The trial reports an epoch after the trainer commits it, so a worker killed between the
    two leaves an epoch that the study has no report of; its retry reports it on resuming, so
    that the trial's curve has every epoch it trained.
    """
    from vivit_hpo.training.run import epoch_score  # torch: only where a run resumes

    out, best = [], -math.inf
    for row in history:
        best = max(best, epoch_score(row))
        if int(row["epoch"]) not in reported:
            out.append((int(row["epoch"]), best))
    return out
