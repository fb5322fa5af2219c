"""One run end to end (:mod:`vivit_hpo.training.run`): trained, its best checkpoint scored and
its ``summary.json`` written; the CLI, the API and a study's trials go through the same code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vivit_hpo.config import RunConfig, parse_run_config
from vivit_hpo.testing import tiny_base
from vivit_hpo.training import EpochReport, evaluate, load_run
from vivit_hpo.training import run as run_module
from vivit_hpo.training.run import SUMMARY_FILE, load_run_sessions, score_best, train_run


def _tiny(epochs: int) -> RunConfig:
    tree = tiny_base()
    tree["train"]["epochs"] = epochs
    return parse_run_config(tree)


def test_train_run_writes_the_test_score_of_its_best_checkpoint(
    sim_dir: Path, tmp_path: Path
) -> None:
    cfg = _tiny(2)
    data = load_run_sessions([sim_dir], cfg)
    seen: list[EpochReport] = []
    run = train_run(
        cfg, data, tmp_path / "run", device="cpu", paths=[sim_dir], on_epoch=seen.append
    )
    assert [r.epoch for r in seen] == [1, 2] == [r.epoch for r in run.reports]
    summary = json.loads((tmp_path / "run" / SUMMARY_FILE).read_text())
    assert summary["best_epoch"] == run.best_epoch and summary["epochs_run"] == 2
    assert set(summary["response_kinds"]) == set(data.names)
    # The saved best checkpoint, scored on its own, gives the test BPS the summary holds.
    _, best, _ = load_run(tmp_path / "run")
    want = evaluate(best, data, "test", cfg.train.batch_size)
    assert summary["test_bps"] == pytest.approx({n: s.bps for n, s in want.items()}, abs=1e-9)
    assert summary["val_bps"].keys() == summary["test_bps"].keys() == set(data.names)
    assert set(summary["test_oracle_bps"]) == set(data.names)  # simulated: the oracle beside
    # Written atomically: no temporary file is left beside it.
    assert not list((tmp_path / "run").glob(f".{SUMMARY_FILE}*"))


def test_a_run_trained_only_writes_no_summary(sim_dir: Path, tmp_path: Path) -> None:
    cfg = _tiny(1)
    run = train_run(
        cfg, load_run_sessions([sim_dir], cfg), tmp_path / "run", device="cpu", score=False
    )
    assert run.best_epoch == 1 and run.summary is None and run.scores == {}
    assert not (tmp_path / "run" / SUMMARY_FILE).exists()


def test_the_cli_the_api_and_a_trial_score_through_run() -> None:
    """One home: ``vivit-hpo train`` and the API train through :func:`train_run`, and a trial's
    ``test_bps`` is :func:`score_best`'s, not a copy of it."""
    from vivit_hpo import api
    from vivit_hpo.cli import train as cli_train
    from vivit_hpo.search import objective

    assert cli_train.train_run is api.train_run is run_module.train_run
    assert objective.score_best is score_best is run_module.score_best
