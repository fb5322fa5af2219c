"""``vivit-hpo bench search`` as a user runs it: two strategies on a tiny simulated spec, each a
real study run by a real worker process; the JSON, the page and the table agree with the
studies in the database."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from search_helpers import ROOT, worker_env

from vivit_hpo.search.storage import open_storage
from vivit_hpo.search.study import read_spec
from vivit_hpo.testing import tiny_spec


def _spec(tmp_path: Path) -> Path:
    tree = tiny_spec(
        description="bench test",
        data={"synth": {"sessions": 1, "neurons": 8, "frames": 2400, "size": [16, 16]}},
        space={
            "embed_dim": {"choices": [16, 32], "to": "model.core.embed_dim"},
            "lr": {"low": 1e-3, "high": 1e-2, "log": True, "to": "train.lr"},
        },
        epochs=2,
        baseline=True,
        sampler={"name": "tpe", "seed": 0, "options": {"n_startup_trials": 2}},
        pruner={"name": "median", "options": {"n_startup_trials": 1, "n_warmup_steps": 0}},
        budget={"n_trials": 5},  # the test runs 3 (--trials)
        heartbeat={"interval_s": 2, "grace_s": 20, "max_retry": 1},
        artifacts={},
    )
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = worker_env("", tmp_path)
    env.pop("VIVIT_HPO_STORAGE")
    return subprocess.run(
        [sys.executable, "-m", "vivit_hpo", "bench", "search", *args],
        cwd=ROOT,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_bench_search_measures_each_strategy(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    got = _bench(
        tmp_path,
        *("--spec", str(_spec(tmp_path)), "--strategies", "default,random"),
        *("--seeds", "1", "--workers", "1", "--trials", "3", "--out", str(out)),
    )
    assert got.returncode == 0, got.stdout[-3000:] + got.stderr[-3000:]
    doc = json.loads((out / "search_bench.json").read_text())
    assert list(doc["runs"]) == ["default", "random"]
    assert doc["oracle_test_bps"] > 0  # simulated data: the oracle is known

    storage = open_storage(f"sqlite:///{out / 'bench.db'}")
    for strategy, (run,) in doc["runs"].items():
        trials = storage.get_all_trials(storage.get_study_id_from_name(run["study"]))
        assert sum(run["states"].values()) == len(trials) == 3, run["states"]
        # Epochs count what each trial trained, pruned ones included.
        assert run["epochs"] == sum(max(t.intermediate_values, default=0) for t in trials)
        assert run["curve"]["epochs"][-1] == run["epochs"]
        best = max(t.value for t in trials if t.value is not None)
        assert run["curve"]["best"][-1] == pytest.approx(best)
        assert run["winner"]["val_bps"] == pytest.approx(best)
        assert isinstance(run["winner"]["test_bps"], float)
        spec = read_spec(storage, run["study"])  # only the sampler and pruner were replaced
        want = {"default": ("tpe", "median"), "random": ("random", "none")}[strategy]
        assert (spec.sampler.name, spec.pruner.name) == want
        assert spec.epochs == 2 and spec.budget.n_trials == 3
        # The product's default starts from the base config; the textbook strategies do not.
        first = min(trials, key=lambda t: t.number)
        assert bool(first.user_attrs.get("baseline")) == (strategy == "default")
    by_name = {r["strategy"]: r for r in doc["summary"]}
    assert by_name["random"]["epochs_ratio"] == pytest.approx(1.0)
    # The rungs' evidence comes from the trials no pruner stopped: random's complete ones.
    agreement = doc["rank_agreement"]
    assert agreement["strategies"] == ["random"]
    assert agreement["trials"] == doc["runs"]["random"][0]["states"].get("complete", 0)
    page = (out / "search_bench.html").read_text()
    assert "plotly" in page and "default (median of 1)" in page and "random (median of 1)" in page
    assert "search benchmark" in got.stdout and "random" in got.stdout


def test_bench_search_refuses_an_unknown_strategy(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    got = _bench(
        tmp_path, "--spec", str(_spec(tmp_path)), "--strategies", "tpe,grid", "--out", str(out)
    )
    assert got.returncode == 2, got.stdout + got.stderr
    assert "strategy 'grid'" in got.stdout + got.stderr
    assert "Traceback" not in got.stdout + got.stderr
    assert not out.exists()
