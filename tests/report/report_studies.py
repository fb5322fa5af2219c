"""Studies built trial by trial (known values, states, times), and a tiny trained run."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState

optuna.logging.set_verbosity(optuna.logging.WARNING)

T0 = datetime(2026, 1, 1, 12, 0, 0)
DISTS = {
    "embed_dim": CategoricalDistribution([16, 32]),
    "lr": FloatDistribution(1e-4, 1e-2, log=True),
}
SPEC = yaml.safe_dump(
    {
        "data": {"synth": {"sessions": 2}},
        "budget": {"n_trials": 10, "timeout_minutes": 120},
        "sampler": {"name": "tpe"},
    }
)


def add_trial(
    study: optuna.Study,
    state: TrialState,
    *,
    value: float | None = None,
    params: dict[str, Any] | None = None,
    dists: dict[str, Any] | None = None,
    curve: list[float] | None = None,
    attrs: dict[str, Any] | None = None,
    system_attrs: dict[str, Any] | None = None,
    start_min: float = 0.0,
    minutes: float | None = 30.0,
) -> None:
    """Add a finished (or running) trial with exact times: it starts ``start_min`` after T0."""
    params = params or {}
    start = T0 + timedelta(minutes=start_min)
    end = start + timedelta(minutes=minutes) if minutes is not None else None
    study.add_trial(
        FrozenTrial(
            number=0,
            state=state,
            value=value,
            datetime_start=start,
            datetime_complete=end if state != TrialState.RUNNING else None,
            params=params,
            distributions={k: (dists or DISTS)[k] for k in params},
            user_attrs=attrs or {},
            system_attrs=system_attrs or {},
            intermediate_values={i + 1: v for i, v in enumerate(curve or [])},
            trial_id=0,
        )
    )


def build_small_study(
    storage: Any,
    name: str,
    *,
    best_dir: Path | None = None,
    data: Path | None = None,
    calcium: bool = False,
) -> optuna.Study:
    """Ten trials: 5 complete, 2 pruned (after epochs 1 and 2), 1 failed, 1 infeasible, 1 running.

    Complete trials (number: value, embed_dim, lr, params_count, device):
        0: 0.10, 16, 1e-3, 1000, cuda:0     1: 0.30, 32, 1e-3, 4000, cuda:0
        2: 0.20, 16, 3e-3, 1000, cpu        3: 0.25, 32, 3e-4, 4000, cpu
        6: 0.35, 32, 2e-3, 5000, cuda:1
    Every trial runs 30 minutes, except the running one (started 10 hours after T0).
    ``best_dir`` becomes trial 6's ``trial_dir``; ``data`` becomes the spec's ``data.paths``
    (its oracle then comes from the folder's oracle.json instead of the ``oracle_bps`` attribute).
    ``calcium``: the sessions hold calcium traces (``response_kinds``), each complete trial its
    correlation ``val_corr`` = value + 0.2 and ``test_corr``, and there is no oracle.
    """
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    spec = yaml.safe_load(SPEC)
    if data is not None:
        spec["data"] = {"paths": [str(data)]}
    study.set_user_attr("spec", yaml.safe_dump(spec))
    s0, s1 = ("sim00", "sim01") if data is not None else ("s0", "s1")
    if data is None and not calcium:
        study.set_user_attr("oracle_bps", {"s0": {"train": 0.5, "val": 0.6}, "s1": {"val": 0.4}})

    def complete(value: float, d: int, lr: float, n: int, device: str, start: float) -> None:
        where = {"trial_dir": str(best_dir)} if best_dir is not None and value == 0.35 else {}
        add_trial(
            study,
            TrialState.COMPLETE,
            value=value,
            params={"embed_dim": d, "lr": lr},
            curve=[value / 2, value],
            attrs={
                "params_count": n,
                "flops_per_sample": 10.0 * n,
                "samples_per_s": 1e6 / n,
                "device": device,
                "val_bps_per_session": {s0: value + 0.05, s1: value - 0.05},
                "best_epoch": 2,
                "test_bps": value - 0.01,
                **where,
                **(
                    {
                        "response_kinds": {s0: "calcium", s1: "calcium"},
                        "val_corr": value + 0.2,
                        "test_corr": value + 0.19,
                    }
                    if calcium
                    else {}
                ),
            },
            start_min=start,
        )

    complete(0.10, 16, 1e-3, 1000, "cuda:0", 0)
    complete(0.30, 32, 1e-3, 4000, "cuda:0", 30)
    complete(0.20, 16, 3e-3, 1000, "cpu", 60)
    complete(0.25, 32, 3e-4, 4000, "cpu", 90)
    add_trial(
        study,
        TrialState.PRUNED,
        params={"embed_dim": 16, "lr": 1e-4},
        curve=[0.01],
        attrs={"prune_reason": "hyperband", "device": "cuda:0"},
        start_min=120,
    )
    add_trial(
        study,
        TrialState.PRUNED,
        params={"embed_dim": 32, "lr": 1e-2},
        curve=[0.02, 0.03],
        attrs={"device": "cuda:0"},
        start_min=150,
    )
    complete(0.35, 32, 2e-3, 5000, "cuda:1", 180)
    add_trial(
        study,
        TrialState.FAIL,
        params={"embed_dim": 16, "lr": 5e-3},
        attrs={"fail_reason": "NaN loss", "device": "cpu"},
        start_min=210,
    )
    # As the search records it: PRUNED before training, with a violated constraint.
    add_trial(
        study,
        TrialState.PRUNED,
        params={"embed_dim": 32, "lr": 5e-3},
        attrs={"infeasible_reason": "tubelet larger than frames"},
        system_attrs={"constraints:feasible": 1.0},
        start_min=240,
        minutes=0.0,
    )
    add_trial(
        study,
        TrialState.RUNNING,
        params={"embed_dim": 16, "lr": 2e-3},
        curve=[0.05],
        start_min=600,
        minutes=None,
    )
    return study


@pytest.fixture()
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


@pytest.fixture()
def small_study(sqlite_url: str) -> optuna.Study:
    return build_small_study(sqlite_url, "small")


@pytest.fixture()
def pg_study(pg_url: str) -> Iterator[tuple[str, optuna.Study]]:
    """The small study on the test PostgreSQL under a unique name, deleted afterwards."""
    from vivit_hpo.search.storage import open_storage

    storage = open_storage(pg_url)
    name = f"report-test-{uuid.uuid4().hex[:10]}"
    study = build_small_study(storage, name)
    try:
        yield pg_url, study
    finally:
        optuna.delete_study(study_name=name, storage=storage)
        storage.engine.dispose()


@pytest.fixture(scope="session")
def tiny_run(sim_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The suite's tiny ViViT (:func:`~vivit_hpo.testing.tiny_base`: D=16, 1+1 blocks) with 2
    registers, no modulator and 8 lags, trained for one short epoch on ``sim_dir``."""
    from vivit_hpo.config import parse_run_config, set_key
    from vivit_hpo.data import load_sessions
    from vivit_hpo.testing import tiny_base
    from vivit_hpo.training import Trainer

    tree = tiny_base()
    changes = {
        "model.core.num_registers": 2,
        "model.modulator.enabled": False,
        "data.num_lags": 8,
        "train.epochs": 1,
    }
    for key, value in changes.items():
        set_key(tree, key, value)
    cfg = parse_run_config(tree, "tiny run")
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    trainer = Trainer(cfg, load_sessions([sim_dir], cfg.data), device="cpu", run_dir=run_dir)
    for _ in trainer.epochs():
        pass
    return run_dir
