"""Yardsticks (the spec's ``baselines``): enqueued at creation, trained as they are, never the
search's best, never seen by the sampler."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from vivit_hpo.errors import SpecError
from vivit_hpo.search.factory import SearchOnlySampler
from vivit_hpo.search.record import YARDSTICK, YARDSTICK_CONFIG, TrialRecord
from vivit_hpo.search.spec import load_spec
from vivit_hpo.search.storage import open_storage
from vivit_hpo.search.study import best_of, create_study, load_study, standings, trial_rows

TINY_CNN: dict[str, Any] = {
    "model": {
        "core": {"kind": "cnn", "channels": [4], "blocks_per_stage": 1},
        "modulator": {"hidden_dim": 4},
    },
    "data": {"num_lags": 6, "max_val_bins": 32},
    "train": {
        "batch_size": 16,
        "steps_per_epoch": 2,
        "warmup_epochs": 0,
        "early_stopping_patience": None,
        "epochs": 50,
    },
}


def _yard(tmp_path: Path, name: str = "cnn_tiny", tree: dict[str, Any] | None = None) -> str:
    folder = tmp_path / "yard"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(tree or TINY_CNN))
    return f"yard/{name}.yaml"  # relative to the spec file


def test_create_enqueues_each_yardstick(write_spec: Any, tmp_path: Path) -> None:
    spec = load_spec(write_spec(baseline=True, baselines=[_yard(tmp_path)]))
    assert spec.baselines == [str(tmp_path / "yard" / "cnn_tiny.yaml")]
    storage = open_storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    create_study(storage, "yard", spec)
    study = load_study(storage, "yard")
    assert study.user_attrs["n_trials"] == 6 + 1  # the yardstick on top of the search's budget
    base, yard = study.get_trials()
    assert base.user_attrs.get("baseline") and not base.user_attrs.get(YARDSTICK)
    assert yard.state == TrialState.WAITING and yard.user_attrs[YARDSTICK] == "cnn_tiny"
    cfg = yard.user_attrs[YARDSTICK_CONFIG]
    assert cfg["model"]["core"]["kind"] == "cnn" and cfg["train"]["epochs"] == spec.epochs
    assert TrialRecord.of(yard).yardstick == "cnn_tiny"
    assert "yardstick cnn_tiny" in trial_rows([yard])[0].reason


def test_bad_yardstick_is_one_line_naming_the_file(write_spec: Any, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"missing\.yaml"):
        load_spec(write_spec(baselines=["yard/missing.yaml"]))
    bad = {
        **TINY_CNN,
        "model": {"core": {"kind": "cnn", "channels": [4], "stem_kernel": [0, 3, 3]}},
    }
    with pytest.raises(SpecError, match=r"baselines: .*bad\.yaml") as e:
        load_spec(write_spec(baselines=[_yard(tmp_path, "bad", bad)]))
    assert "\n" not in str(e.value)
    with pytest.raises(SpecError, match="same name"):
        load_spec(write_spec(baselines=[_yard(tmp_path), "other/cnn_tiny.yaml"]))


def _trial(number: int, value: float, yardstick: bool = False) -> optuna.trial.FrozenTrial:
    params = {} if yardstick else {"lr": 0.1 * (number + 1)}
    dists = {} if yardstick else {"lr": FloatDistribution(0.01, 1.0)}
    attrs: dict[str, Any] = {YARDSTICK: "ln", "test_bps": 0.9} if yardstick else {"test_bps": 0.2}
    t = create_trial(value=value, params=params, distributions=dists, user_attrs=attrs)
    t.number = number
    return t


def test_best_of_never_picks_a_yardstick() -> None:
    trials = [_trial(0, 0.1), _trial(1, 0.9, yardstick=True), _trial(2, 0.3)]
    best = best_of(trials)
    assert best is not None and best.number == 2
    rows = standings(trials, oracle=1.0)
    assert [(r.label, r.number) for r in rows] == [("best ViViT", 2), ("ln", 1)]
    assert rows[1].fraction_of_oracle == pytest.approx(0.9)
    assert standings(trials[:1], oracle=None) == []  # no yardstick: no comparison


def test_tpe_does_not_see_yardsticks() -> None:
    """A COMPLETE trial without the space's parameters would empty multivariate TPE's
    intersection search space; the wrapper leaves it out."""
    inner = optuna.samplers.TPESampler(seed=0, n_startup_trials=2)
    study = optuna.create_study(direction="maximize", sampler=SearchOnlySampler(inner))
    for t in (_trial(0, 0.1), _trial(1, 0.9, yardstick=True), _trial(2, 0.3)):
        study.add_trial(t)
    probe = study.ask()
    frozen = study._storage.get_trial(probe._trial_id)
    space = study.sampler.infer_relative_search_space(study, frozen)
    assert "lr" in space
    plain = optuna.samplers.TPESampler(seed=0, n_startup_trials=2)
    assert plain.infer_relative_search_space(study, frozen) == {}  # what it avoids


def test_worker_trains_the_stored_config(write_spec: Any, tmp_path: Path) -> None:
    from vivit_hpo.search.worker import run_worker

    spec = load_spec(write_spec(baselines=[_yard(tmp_path)], epochs=2))
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    create_study(open_storage(url), "yw", spec)
    run_worker("yw", url, n_trials=1, device="cpu", install_signals=False)
    t = load_study(open_storage(url), "yw").get_trials()[0]
    r = TrialRecord.of(t)
    assert r.status == "complete" and r.yardstick == "cnn_tiny" and t.params == {}
    assert r.run_config is not None and r.run_config["model"]["core"]["kind"] == "cnn"
    assert r.epochs_run == 2 and r.test_bps is not None
