"""The Python API (``import vivit_hpo as vh``): light to import, a study end to end, training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import vivit_hpo as vh
from vivit_hpo.testing import tiny_base

ROOT = Path(__file__).resolve().parents[1]

HEAVY = ("torch", "optuna", "numpy", "typer", "rich")


def _python(code: str, *args: str) -> str:
    """Run ``code`` in a fresh interpreter on this checkout; its stdout."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_import_loads_no_heavy_library() -> None:
    out = _python(
        "import sys, vivit_hpo; dir(vivit_hpo); "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    assert out.strip() == "[]"


def test_every_public_name_resolves_and_others_raise() -> None:
    for name in vh.__all__:
        assert getattr(vh, name) is not None
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = vh.no_such_name  # type: ignore[attr-defined]


_STUDY = """
import json, signal, sys
import vivit_hpo as vh

url, spec = sys.argv[1], sys.argv[2]
# What the process started with (SIG_IGN for SIGINT where it was started in the background).
handlers = lambda: [signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)]
before = handlers()
vh.create_study(spec, name="api", storage=url)
summary = vh.run_worker("api", storage=url, device="cpu")
best = vh.load_study("api", storage=url).best_trial
got = {
    "ui": sorted(m for m in ("typer", "rich") if m in sys.modules),
    "signals_kept": handlers() == before,
    "stopped_by": summary.stopped_by,
    "state": best.state.name,
    "value": best.value,
}
got["run_exit"] = vh.run_study("api", storage=url).exit_code  # done already: silent
print(json.dumps(got))
"""


def _spec(sim_dir: Path, tmp_path: Path) -> dict[str, Any]:
    return {
        "description": "the Python API",
        "data": {"paths": [str(sim_dir)]},
        "base": {"config": tiny_base()},
        "space": {"lr": {"low": 1e-3, "high": 1e-2, "log": True, "to": "train.lr"}},
        "epochs": 1,
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "budget": {"n_trials": 1},
        "artifacts": {"dir": str(tmp_path / "artifacts")},
    }


def test_a_study_runs_end_to_end_through_the_api_alone(sim_dir: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(_spec(sim_dir, tmp_path)))
    out = _python(_STUDY, f"sqlite:///{tmp_path / 'db.sqlite'}", str(spec))
    lines = out.splitlines()
    assert len(lines) == 1, out  # nothing printed but the script's own line
    got = json.loads(lines[0])
    assert got["ui"] == []  # no CLI library behind the API
    assert got["signals_kept"]  # the process's signal handlers are left alone
    assert got["stopped_by"] == "budget"
    assert got["state"] == "COMPLETE"
    assert isinstance(got["value"], float)
    assert got["run_exit"] == 0


def test_train_writes_a_run_that_load_run_reads(sim_dir: Path, tmp_path: Path) -> None:
    tree = tiny_base()
    tree["train"]["epochs"] = 1
    result = vh.train(tree, [sim_dir], out=tmp_path / "run", device="cpu")
    assert [r.epoch for r in result.reports] == [1]
    assert result.best_epoch == 1
    cfg, model, metas = vh.load_run(result.run_dir)
    assert cfg.train.epochs == 1
    assert not model.training
    assert [m.name for m in metas] == ["sim00", "sim01"]
