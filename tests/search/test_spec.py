"""Study specs: the shipped ones load, every kind of bad spec is one line naming its key, and a bad
spec or storage URL given to the CLI exits 2 without writing a study."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from search_helpers import ROOT, tiny_spec_tree
from typer.testing import CliRunner

from vivit_hpo.cli import app
from vivit_hpo.errors import SpecError
from vivit_hpo.search.factory import build_pruner, build_sampler
from vivit_hpo.search.spec import (
    DEFAULT_SPACE,
    effective_n_trials,
    load_spec,
    parse_spec,
    spec_from_text,
    spec_to_text,
)
from vivit_hpo.search.storage import open_storage

STUDIES = sorted((ROOT / "studies").glob("*.yaml"))


def test_the_shipped_specs_load() -> None:
    names = {p.stem for p in STUDIES}
    assert {"quickstart", "small", "full", "ablations"} <= names
    for path in STUDIES:
        spec = load_spec(path)
        assert spec.objective.metric == "val_bps" and spec.objective.direction == "maximize"
        build_sampler(spec)
        build_pruner(spec)


def test_full_spec_is_the_roadmap_space() -> None:
    spec = load_spec(ROOT / "studies" / "full.yaml")
    choices = {name: p.choices for name, p in spec.space.items()}
    assert choices["patch"] == [2, 4, 8]
    assert choices["stride"] == [2, 4, 8] and spec.space["stride"].le == "patch"
    assert choices["embed_dim"] == [192, 384, 768]
    assert choices["blocks"] == [4, 6, 8, 12]
    assert choices["heads"] == [4, 6, 8, 12]
    assert choices["mlp_ratio"] == [2, 4, 8]
    assert choices["dropout"] == [0.0, 0.1, 0.2]
    assert spec.space["lr"].log and spec.space["weight_decay"].log
    assert set(spec.space) == set(DEFAULT_SPACE)
    assert spec.sampler.name == "tpe" and spec.pruner.name == "hyperband"


def test_ablation_grid_size_caps_the_budget() -> None:
    spec = load_spec(ROOT / "studies" / "ablations.yaml")
    assert spec.sampler.name == "grid"
    assert effective_n_trials(spec) == 2 * 3 * 2 * 3 * 2 * 2


def test_stored_spec_round_trips(sim_dir: Path, tmp_path: Path) -> None:
    spec = parse_spec(tiny_spec_tree(sim_dir, tmp_path))
    assert spec_from_text(spec_to_text(spec)) == spec


def test_relative_paths_resolve_against_the_spec_file(tmp_path: Path, sim_dir: Path) -> None:
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({"train": {"lr": 0.002}}))
    (tmp_path / "data").symlink_to(sim_dir)
    tree = tiny_spec_tree(sim_dir, tmp_path / "arts")
    tree["data"] = {"paths": ["data"]}
    tree["base"] = {"config": "cfg.yaml", "overrides": ["train.batch_size=8"]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(tree))
    spec = load_spec(path)
    assert spec.data.paths == [str(tmp_path / "data")]
    base = spec.base_tree()
    assert base["train"]["lr"] == 0.002 and base["train"]["batch_size"] == 8
    assert base["train"]["epochs"] == spec.epochs


BAD: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("unknown key", lambda t: t.update(epochz=3), "epochz: unknown key"),
    ("unknown nested key", lambda t: t["budget"].update(n_trial=3), "budget.n_trial: unknown key"),
    ("wrong type", lambda t: t.update(epochs="many"), "epochs = 'many'"),
    ("bad sampler", lambda t: t["sampler"].update(name="bayes"), "sampler.name = 'bayes'"),
    ("bad pruner", lambda t: t["pruner"].update(name="asha"), "pruner.name = 'asha'"),
    ("no data", lambda t: t.update(data={}), "data"),
    ("empty choices", lambda t: t["space"]["heads"].update(choices=[]), "space.heads"),
    (
        "empty range",
        lambda t: t["space"]["lr"].update(low=1e-2, high=1e-3),
        "space.lr: empty range",
    ),
    ("log of zero", lambda t: t["space"]["lr"].update(low=0.0), "space.lr: a log range"),
    (
        "unknown target",
        lambda t: t["space"]["heads"].update(to="model.core.n_heads"),
        "space.heads.to: 'model.core.n_heads' is not a run-config key",
    ),
    (
        "le names a later parameter",
        lambda t: t["space"]["patch"].update(le="stride"),
        "space: patch refers to 'stride'",
    ),
    (
        "no valid configuration",
        lambda t: t["space"].update(heads={"choices": [5, 7], "to": "model.core.num_heads"}),
        "space: no valid configuration",
    ),
    (
        "tubelets larger than the frames",
        lambda t: t["space"].update(
            patch={"choices": [32], "to": "model.core.kernel_size"},
            stride={"value": 32, "to": "model.core.stride"},
        ),
        "space: no valid configuration",
    ),
    (
        "bad sampler option",
        lambda t: t["sampler"].update(options={"n_startup": 3}),
        "sampler.options",
    ),
    (
        "bad base config",
        lambda t: t["base"].update(overrides=["train.lr=-1"]),
        "base: train.lr = -1",
    ),
    (
        "grid over a range",
        lambda t: t["sampler"].update(name="grid", options={}),
        "space.lr is a range",
    ),
    ("grace below interval", lambda t: t["heartbeat"].update(grace_s=1), "heartbeat"),
    ("zero trials", lambda t: t["budget"].update(n_trials=0), "budget.n_trials = 0"),
    (
        "per-session list of the wrong length",
        lambda t: t.update(data={"synth": {"sessions": 3, "neurons": [8, 16]}}),
        "neurons: 2 values for 3 sessions; give one per session",
    ),
]


@pytest.mark.parametrize(("case", "mutate", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_spec_is_one_line_naming_the_key(
    case: str,
    mutate: Callable[[dict[str, Any]], None],
    expected: str,
    sim_dir: Path,
    tmp_path: Path,
) -> None:
    tree = tiny_spec_tree(sim_dir, tmp_path)
    tree = yaml.safe_load(yaml.safe_dump(tree))  # a deep copy
    mutate(tree)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(str(path))
    assert expected in msg, msg


def test_missing_data_path_is_named(sim_dir: Path, tmp_path: Path) -> None:
    tree = tiny_spec_tree(sim_dir, tmp_path, data={"paths": [str(tmp_path / "nope")]})
    with pytest.raises(SpecError, match=r"data\.paths: .*nope"):
        parse_spec(tree)


@pytest.mark.postgres
def test_cli_bad_spec_exits_2_and_writes_nothing(
    write_spec: Callable[..., Path], pg_url: str, study_name: str, tmp_path: Path
) -> None:
    storage = open_storage(pg_url)
    before = {s.study_name for s in storage.get_all_studies()}
    bad = write_spec(sampler={"name": "tpe", "options": {"bogus": 1}})
    result = CliRunner().invoke(
        app, ["study", "create", study_name, "--spec", str(bad), "--storage", pg_url]
    )
    assert result.exit_code == 2, result.output
    assert "sampler.options" in result.output
    assert {s.study_name for s in storage.get_all_studies()} == before
    assert not (tmp_path / "artifacts" / study_name).exists()


def _binary(path: Path) -> Path:
    path.write_bytes(bytes(range(256)) * 4)  # a picture, an archive: not UTF-8 text
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _unreadable(path: Path) -> Path:
    if os.geteuid() == 0:
        pytest.skip("root reads a file whatever its permission bits")
    path.write_text("description: secret\n")
    path.chmod(0)
    return path


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_binary, "not a text file (byte 128 is not UTF-8); pass a YAML config"),
        (_folder, "is a folder, not a file; pass the path of a YAML config"),
        (_unreadable, "cannot be read (Permission denied); check its permissions"),
    ],
    ids=["binary", "folder", "unreadable"],
)
def test_cli_spec_that_is_not_a_readable_text_file_exits_2_in_one_line(
    make: Callable[[Path], Path], expected: str, pg_url: str, study_name: str, tmp_path: Path
) -> None:
    storage = open_storage(pg_url)
    before = {s.study_name for s in storage.get_all_studies()}
    spec = make(tmp_path / "spec.yaml")
    result = CliRunner().invoke(
        app, ["study", "create", study_name, "--spec", str(spec), "--storage", pg_url]
    )
    assert result.exit_code == 2, result.output
    assert result.output == f"error: {spec}: {expected}\n", result.output
    assert {s.study_name for s in storage.get_all_studies()} == before


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://u:secret@localhost/db", "unsupported database 'mysql'"),
        ("postgresql://postgres:secret@127.0.0.1:1/test", "cannot connect"),
        ("postgresql://postgres:secret@127.0.0.1:5432/no_such_db_vivit", "does not exist"),
        ("not a url", "not a database URL"),
        ("sqlite:///no/such/folder/x.db", "does not exist"),
    ],
)
def test_cli_bad_storage_exits_2_masked_and_writes_nothing(
    url: str, expected: str, write_spec: Callable[..., Path], pg_url: str, study_name: str
) -> None:
    storage = open_storage(pg_url)
    before = {s.study_name for s in storage.get_all_studies()}
    result = CliRunner().invoke(
        app, ["study", "create", study_name, "--spec", str(write_spec()), "--storage", url]
    )
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "\n" not in line and line.startswith("error: storage")
    assert expected in line
    assert "secret" not in result.output
    assert {s.study_name for s in storage.get_all_studies()} == before
    assert optuna.__version__.startswith("5.")


@pytest.mark.postgres
def test_cli_worker_on_a_missing_study_exits_2(pg_url: str, study_name: str) -> None:
    result = CliRunner().invoke(app, ["worker", study_name, "--storage", pg_url])
    assert result.exit_code == 2
    assert f"study {study_name!r} does not exist" in result.output


def _tree_with(sim_dir: Path, tmp_path: Path, **changes: Any) -> Any:
    return parse_spec(tiny_spec_tree(sim_dir, tmp_path, **changes), "test")


def test_hyperband_rungs_start_after_the_warm_up_with_few_brackets(
    sim_dir: Path, tmp_path: Path
) -> None:
    from vivit_hpo.search.factory import hyperband_min_resource, tpe_startup_trials

    base = {"config": {**tiny_spec_tree(sim_dir, tmp_path)["base"]["config"]}}
    base["config"]["train"] = {**base["config"]["train"], "warmup_epochs": 0.5}
    hyperband = {"name": "hyperband"}
    small = _tree_with(
        sim_dir, tmp_path, base=base, epochs=4, budget={"n_trials": 16}, pruner=hyperband
    )
    assert hyperband_min_resource(small, 3) == 2  # 1 bracket under 30 trials
    longer = _tree_with(sim_dir, tmp_path, base=base, epochs=4, budget={"n_trials": 40})
    assert hyperband_min_resource(longer, 3) == 2  # epoch 1 holds the warm-up
    big = _tree_with(sim_dir, tmp_path, base=base, epochs=20, budget={"n_trials": 60})
    r = hyperband_min_resource(big, 3)
    assert math.floor(math.log(20 / r, 3)) + 1 <= 2  # at most 2 brackets
    assert (tpe_startup_trials(small), tpe_startup_trials(big)) == (3, 10)

    # As Optuna runs it: no trial is pruned at epoch 1, however bad, and 1 bracket.
    pruner = build_pruner(small)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    pruned_at: list[int] = []
    for i in range(8):
        trial = study.ask()
        for epoch in range(1, 5):
            trial.report(1.0 - 0.1 * i + 0.01 * epoch, epoch)
            if trial.should_prune():
                pruned_at.append(epoch)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, 1.0 - 0.1 * i)
    assert pruned_at and min(pruned_at) >= 2, pruned_at
    assert pruner._n_brackets == 1  # the bracket count has no public reader
