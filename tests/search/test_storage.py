"""Storage URLs, masking, transient errors, and the embedded SQLite storage shared by several
processes at once (with the heartbeat on)."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest
import sqlalchemy
from optuna.trial import TrialState

from vivit_hpo.errors import StorageError
from vivit_hpo.search.bench_coordinator import _spec_text, bench_worker, summarize
from vivit_hpo.search.storage import (
    default_storage_url,
    is_transient,
    mask_url,
    open_storage,
    resolve_storage_url,
)
from vivit_hpo.search.study import load_study


def test_mask_url_hides_passwords() -> None:
    assert mask_url("postgresql://u:hunter2@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert "hunter2" not in mask_url("u:hunter2@db/x")
    assert mask_url("sqlite:///a/b.db") == "sqlite:///a/b.db"


def test_default_is_sqlite_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIVIT_HPO_HOME", str(tmp_path))
    monkeypatch.delenv("VIVIT_HPO_STORAGE", raising=False)
    assert default_storage_url() == f"sqlite:///{tmp_path}/storage/vivit-hpo.db"
    assert resolve_storage_url(None) == default_storage_url()
    monkeypatch.setenv("VIVIT_HPO_STORAGE", "postgresql://x@y/z")
    assert resolve_storage_url(None) == "postgresql://x@y/z"
    assert resolve_storage_url("sqlite:///q.db") == "sqlite:///q.db"
    monkeypatch.delenv("VIVIT_HPO_STORAGE")
    storage = open_storage(None)
    assert (tmp_path / "storage" / "vivit-hpo.db").is_file()
    with storage.engine.connect() as conn:  # WAL: readers and the writer do not block
        mode = conn.execute(sqlalchemy.text("PRAGMA journal_mode")).scalar()
    assert mode == "wal"


def test_explicit_sqlite_in_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        open_storage(f"sqlite:///{tmp_path}/nope/x.db")
    assert not (tmp_path / "nope").exists()


def test_transient_errors_are_recognised() -> None:
    dead = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed"))
    assert is_transient(dead)
    try:
        try:
            raise dead
        except sqlalchemy.exc.OperationalError as e:
            raise RuntimeError("wrapped") from e
    except RuntimeError as wrapped:
        assert is_transient(wrapped)
    assert not is_transient(ValueError("bad value"))
    assert not is_transient(sqlalchemy.exc.IntegrityError("x", {}, Exception("dup")))


def test_embedded_sqlite_is_shared_by_three_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three worker processes claim, report and tell at once on one SQLite file."""
    monkeypatch.setenv("VIVIT_HPO_HOME", str(tmp_path))
    url = default_storage_url()
    storage = open_storage(url)
    import optuna

    name = "shared"
    text = _spec_text(trials=45, epochs=3, heartbeat_s=1)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.set_user_attr("spec", text)
    ctx = mp.get_context("spawn")
    outs = [str(tmp_path / f"w{i}.jsonl") for i in range(3)]
    procs = [
        ctx.Process(target=bench_worker, args=(name, url, text, outs[i], i, 45)) for i in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0, 0]

    per_process = [[json.loads(line) for line in Path(o).read_text().splitlines()] for o in outs]
    assert all(rows for rows in per_process)  # every process ran trials
    rows = [r for rows in per_process for r in rows]
    numbers = sorted(r["number"] for r in rows)
    assert numbers == list(range(45))  # each trial claimed by exactly one process
    trials = load_study(open_storage(url), name).get_trials()
    assert len(trials) == 45
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert all(t.intermediate_values for t in trials)
    s = summarize(rows)
    assert set(s["overall"]) >= {"ask (claim + sample)", "tell", "total per trial"}
