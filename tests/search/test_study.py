"""Studies on a real PostgreSQL: a name is a plain folder name, and nothing the service
creates, writes or deletes lies outside the artifacts root, whatever the database says;
``study create`` refuses session files that break the data contract; ``study enqueue --set``
reads overrides as ``train --set`` does and enqueues only values the space can take."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState
from search_helpers import TINY_BASE, create, worker_env
from typer.testing import CliRunner

from vivit_hpo.cli import app
from vivit_hpo.config import load_run_config
from vivit_hpo.errors import ArtifactPathError
from vivit_hpo.report.build import study_data_paths
from vivit_hpo.report.snapshot import StudySnapshot
from vivit_hpo.search.space import trial_config
from vivit_hpo.search.spec import StudySpec, check_study_name, load_spec, spec_to_text
from vivit_hpo.search.storage import open_storage
from vivit_hpo.search.study import (
    SPEC_ATTR,
    create_study,
    delete_study,
    ensure_data,
    load_study,
    logs_dir,
    materialise_synth,
    prune_checkpoints,
    read_spec,
    study_uid,
    trial_dir,
    trials_dir,
)
from vivit_hpo.search.worker import run_worker

pytestmark = pytest.mark.postgres


def _one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: ") and "Traceback" not in output, output
    return lines[0]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b", "../up", "", " x", "a\\b"])
def test_create_refuses_a_name_that_is_not_a_folder_name(
    name: str, write_spec: Callable[..., Path], pg_url: str, tmp_path: Path
) -> None:
    storage = open_storage(pg_url)
    existed = name in {s.study_name for s in storage.get_all_studies()}
    spec = write_spec()
    before_files = _tree(tmp_path)
    try:
        result = CliRunner().invoke(
            app, ["study", "create", name, "--spec", str(spec), "--storage", pg_url]
        )
        assert result.exit_code == 2, result.output
        line = _one_error_line(result.output)
        assert f"study name {name!r}" in line and "letters, digits" in line
        # No study of that name (the database is shared: other runs may add and drop theirs).
        assert name not in {s.study_name for s in storage.get_all_studies()}
        assert _tree(tmp_path) == before_files  # nothing written, above the root or in it
        with pytest.raises(ArtifactPathError):
            create_study(storage, name, load_spec(spec))  # the library refuses it too
        assert check_study_name("vivit-small.v2_1") == "vivit-small.v2_1"
    finally:
        # A broken check must not leave such a study in the shared database.
        if not existed and name in {s.study_name for s in storage.get_all_studies()}:
            optuna.delete_study(study_name=name, storage=storage)
        storage.engine.dispose()


def test_delete_of_a_stored_bad_name_never_leaves_the_artifacts_root(
    write_spec: Callable[..., Path], pg_url: str, tmp_path: Path
) -> None:
    # The reported bug: a study named '..' (made before names were checked) is deleted with
    # --yes and takes the folder above the artifacts root with it. Here '../victim-<id>', so
    # that the test is alone in the shared database.
    spec = load_spec(write_spec())
    root = tmp_path / "artifacts"
    victim = tmp_path / f"victim-{uuid.uuid4().hex[:8]}"
    (victim / "trial-0" / "checkpoints").mkdir(parents=True)
    (root / "other" / "trial-0").mkdir(parents=True)
    name = f"../{victim.name}"
    storage = open_storage(pg_url)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.set_user_attr(SPEC_ATTR, spec_to_text(spec))
    try:
        runner = CliRunner()
        for cmd in (["study", "delete", name, "--yes"], ["study", "show", name]):
            result = runner.invoke(app, [*cmd, "--storage", pg_url])
            assert result.exit_code == 2, result.output
            line = _one_error_line(result.output)
            assert "letters, digits" in line and "--keep-artifacts" in line
        assert (victim / "trial-0" / "checkpoints").is_dir()
        assert (root / "other" / "trial-0").is_dir()
        assert name in {s.study_name for s in storage.get_all_studies()}
        with pytest.raises(ArtifactPathError):
            spec.study_dir(name)
        with pytest.raises(ArtifactPathError):
            trial_dir(spec, name, 0, uid=None)

        # --keep-artifacts removes it from the storage and touches no folder.
        result = runner.invoke(
            app, ["study", "delete", name, "--yes", "--keep-artifacts", "--storage", pg_url]
        )
        assert result.exit_code == 0, result.output
        assert name not in {s.study_name for s in storage.get_all_studies()}
        assert (victim / "trial-0" / "checkpoints").is_dir()
        assert (root / "other" / "trial-0").is_dir()
    finally:
        if name in {s.study_name for s in storage.get_all_studies()}:
            optuna.delete_study(study_name=name, storage=storage)
        storage.engine.dispose()


def test_a_study_folder_that_resolves_outside_the_root_is_refused(
    write_spec: Callable[..., Path], pg_url: str, study_name: str, tmp_path: Path
) -> None:
    spec_path = write_spec()
    spec = load_spec(spec_path)
    storage = open_storage(pg_url)
    create_study(storage, study_name, spec)
    outside = tmp_path / "elsewhere"
    (outside / "keep").mkdir(parents=True)
    folder = tmp_path / "artifacts" / study_name
    assert not folder.exists()  # session files: no data folder was made
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.symlink_to(outside, target_is_directory=True)
    with pytest.raises(ArtifactPathError, match="outside"):
        trial_dir(spec, study_name, 3, uid="abc")
    result = CliRunner().invoke(app, ["study", "delete", study_name, "--yes", "--storage", pg_url])
    assert result.exit_code == 2, result.output
    assert "outside" in _one_error_line(result.output)
    assert (outside / "keep").is_dir()
    assert study_name in {s.study_name for s in storage.get_all_studies()}
    storage.engine.dispose()


def test_a_study_made_again_under_its_name_never_resumes_the_old_checkpoints(
    write_spec: Callable[..., Path], pg_url: str, study_name: str
) -> None:
    spec_path = write_spec(
        budget={"n_trials": 1},
        epochs=2,
        pruner={"name": "none"},
        space={"lr": {"low": 1e-3, "high": 1e-2, "log": True, "to": "train.lr"}},
    )
    spec = load_spec(spec_path)
    storage = open_storage(pg_url)
    create_study(storage, study_name, spec)
    old = load_study(storage, study_name)
    assert run_worker(study_name, pg_url, device="cpu", install_signals=False).trials == 1
    old_uid = study_uid(old)
    assert old_uid is not None
    old_dir = trial_dir(spec, study_name, 0, uid=old_uid)
    assert (old_dir / "checkpoints" / "last.pt").is_file()  # the best trial keeps its own

    delete_study(storage, study_name, artifacts=False)  # --keep-artifacts
    create_study(storage, study_name, spec)
    new = load_study(storage, study_name)
    assert study_uid(new) not in (None, old_uid)
    assert run_worker(study_name, pg_url, device="cpu", install_signals=False).trials == 1
    (t,) = new.get_trials()
    assert t.number == 0 and t.state.name == "COMPLETE"
    assert "resumed_from_epoch" not in t.user_attrs, t.user_attrs  # trained from epoch 1
    assert sorted(t.intermediate_values) == [1, 2]
    assert Path(t.user_attrs["trial_dir"]) == trial_dir(spec, study_name, 0, uid=study_uid(new))
    assert (old_dir / "checkpoints" / "last.pt").is_file()  # the old folder is left alone
    assert old_dir.parent.parent == spec.study_dir(study_name)
    storage.engine.dispose()


def test_pruning_keeps_the_best_and_a_failed_trial_that_its_retry_will_resume(
    write_spec: Callable[..., Path], pg_url: str, study_name: str
) -> None:
    spec = load_spec(write_spec())  # keep_best: 2
    storage = open_storage(pg_url)
    study = create_study(storage, study_name, spec)
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}

    def add(state: TrialState, value: float | None = None, **system: object) -> None:
        study.add_trial(
            optuna.create_trial(
                state=state,
                value=value,
                params={"x": 0.5},
                distributions=dist,
                system_attrs=system,
            )
        )

    add(TrialState.COMPLETE, 0.3)  # 0: best
    add(TrialState.COMPLETE, 0.1)  # 1: third
    add(TrialState.FAIL)  # 2: interrupted, its retry waits
    add(TrialState.WAITING, failed_trial=2, retry_history=[2])  # 3
    add(TrialState.COMPLETE, 0.2)  # 4: second
    add(TrialState.FAIL)  # 5: lost, retried and finished
    add(TrialState.COMPLETE, 0.0, failed_trial=5, retry_history=[5])  # 6: fourth
    uid = study_uid(study)
    for n in range(7):
        (trial_dir(spec, study_name, n, uid=uid) / "checkpoints").mkdir(parents=True)
    removed = prune_checkpoints(study, spec)
    kept = {
        n for n in range(7) if (trial_dir(spec, study_name, n, uid=uid) / "checkpoints").is_dir()
    }
    assert kept == {0, 2, 3, 4}, kept  # 3 is WAITING: not finished, nothing to prune yet
    assert sorted(p.name for p in removed) == ["trial-1", "trial-5", "trial-6"]
    storage.engine.dispose()


def test_export_best_replaces_an_existing_file_only_with_force(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    db = tmp_path / "studies.db"
    url = f"sqlite:///{db}"
    storage = open_storage(url)
    study = create_study(storage, "exported", load_spec(write_spec()))
    cfg = {"train": {"lr": 0.003}}
    study.add_trial(
        optuna.create_trial(
            value=0.3,
            params={"x": 0.5},
            distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
            user_attrs={"run_config": cfg},
        )
    )
    storage.engine.dispose()
    out = tmp_path / "best.yaml"
    out.write_text("# my own notes\n")
    args = ["study", "export-best", "exported", "--storage", url, "--out"]
    result = CliRunner().invoke(app, [*args, str(out)])
    assert result.exit_code == 2
    assert _one_error_line(result.output) == (
        f"error: --out {out}: already exists; pass --force to replace it, or another --out"
    )
    assert out.read_text() == "# my own notes\n"
    result = CliRunner().invoke(app, [*args, str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(out.read_text()) == cfg and "# Best trial #0" in out.read_text()
    # Not even --force writes over the study's own database, or where a folder is.
    result = CliRunner().invoke(app, [*args, str(db), "--force"])
    assert _one_error_line(result.output) == (
        f"error: --out {db}: is the storage database {db} that this command reads (writing it "
        "would destroy the input); pass another --out"
    )
    result = CliRunner().invoke(app, [*args, str(tmp_path), "--force"])
    assert _one_error_line(result.output) == (
        f"error: --out {tmp_path}: is a folder; pass the path of a file to write"
    )
    assert load_study(open_storage(url), "exported").best_value == 0.3


# -- the files of studies that share a name --------------------------------------------------------


def _synth(neurons: int) -> dict[str, object]:
    return {"synth": {"sessions": 1, "neurons": neurons, "frames": 1000, "size": [16, 16]}}


def _units(folder: Path) -> int:
    with h5py.File(folder / "sim00.h5", "r") as f:
        return int(f["robs"].shape[1])


def _checkpoint(spec: StudySpec, study: optuna.Study) -> Path:
    """A trial folder of ``study`` with a checkpoint in it, as a worker leaves one."""
    ckpt = trial_dir(spec, study.study_name, 0, uid=study_uid(study)) / "checkpoints" / "last.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"weights")
    return ckpt


def _worker_log(spec: StudySpec, study: optuna.Study) -> Path:
    """A worker's log of ``study``, where ``vivit-hpo run`` writes it."""
    log = logs_dir(spec, study.study_name, study_uid(study)) / "worker-0.log"
    log.parent.mkdir(parents=True)
    log.write_text(f"--- starting worker of study {study_uid(study)}\n")
    return log


def _names_in(url: str) -> set[str]:
    storage = open_storage(url)
    try:
        return {s.study_name for s in storage.get_all_studies()}
    finally:
        storage.engine.dispose()


def test_delete_leaves_a_same_named_study_in_another_storage_its_files(
    write_spec: Callable[..., Path], pg_url: str, study_name: str, tmp_path: Path
) -> None:
    # The reported bug: deleting the SQLite study `quickstart` wiped the checkpoints of the
    # PostgreSQL study `quickstart` (same artifacts root) while its workers ran.
    spec = load_spec(write_spec(data=_synth(8)))
    sqlite_url = f"sqlite:///{tmp_path / 'studies.db'}"
    runner = CliRunner()

    def delete(url: str) -> str:
        result = runner.invoke(app, ["study", "delete", study_name, "--yes", "--storage", url])
        assert result.exit_code == 0, result.output
        return result.output

    pg, lite = open_storage(pg_url), open_storage(sqlite_url)
    on_pg = create_study(pg, study_name, spec)
    on_lite = create_study(lite, study_name, spec)
    (data,) = spec.data_paths(study_name)
    assert _units(data) == 8  # one data folder for both: same name, same recipe
    pg_ckpt, lite_ckpt = _checkpoint(spec, on_pg), _checkpoint(spec, on_lite)
    pg_log, lite_log = _worker_log(spec, on_pg), _worker_log(spec, on_lite)
    assert pg_log.parent != lite_log.parent  # each run's workers log apart

    delete(sqlite_url)
    assert study_name not in _names_in(sqlite_url)
    assert not lite_ckpt.parent.parent.parent.exists()  # its own trials-<uid>/ is gone
    assert not lite_log.parent.exists()  # and its own logs-<uid>/
    assert pg_ckpt.read_bytes() == b"weights"  # the other's checkpoints are untouched
    assert pg_log.read_text().endswith(f"{study_uid(on_pg)}\n")  # and its logs
    assert _units(data) == 8  # and so are the data it trains on
    assert study_name in _names_in(pg_url)

    # A study made again in SQLite has no trial yet: its trials-<uid>/ still keeps the data.
    again = create_study(lite, study_name, spec)
    assert trials_dir(spec, study_name, study_uid(again)).is_dir()
    delete(pg_url)
    assert not pg_ckpt.parent.parent.parent.exists() and _units(data) == 8
    assert study_name not in _names_in(pg_url)

    # The last study of the name takes the folder with it: data, logs, locks.
    out = delete(sqlite_url)
    assert not spec.study_dir(study_name).exists(), _tree(spec.study_dir(study_name))
    assert (tmp_path / "artifacts").is_dir() and "deleted study" in out
    pg.engine.dispose()
    lite.engine.dispose()


def test_a_study_made_again_with_another_recipe_gets_data_of_its_recipe(
    write_spec: Callable[..., Path], pg_url: str, study_name: str
) -> None:
    # The reported bug: `study delete d --yes --keep-artifacts`, then `study create d` with 12
    # units instead of 8, trained on the old 8-unit data, reused because oracle.json was there.
    runner = CliRunner()
    old_spec, new_spec = write_spec(data=_synth(8)), write_spec(data=_synth(12))
    for args in (
        ["create", study_name, "--spec", str(old_spec)],
        ["delete", study_name, "--yes", "--keep-artifacts"],
        ["create", study_name, "--spec", str(new_spec)],
    ):
        result = runner.invoke(app, ["study", *args, "--storage", pg_url])
        assert result.exit_code == 0, result.output
    old, new = load_spec(old_spec), load_spec(new_spec)
    (data,) = ensure_data(new, study_name)  # what every worker of the study trains on
    assert _units(data) == 12
    assert json.loads((data / "recipe.json").read_text()) == new.synth_recipe()
    storage = open_storage(pg_url)
    snap = StudySnapshot.from_study(load_study(storage, study_name))
    assert study_data_paths(snap) == [data]  # the report reads the same folder
    storage.engine.dispose()
    # The kept artifacts keep the data their checkpoints were trained on.
    (kept,) = old.data_paths(study_name)
    assert kept != data and _units(kept) == 8

    # A folder that holds another recipe's data is never taken, nor replaced.
    with pytest.raises(ArtifactPathError, match="another recipe"):
        materialise_synth(new, kept)
    assert _units(kept) == 8


def _blocked_removal(block: Path) -> list[str] | None:
    """A command prefix under which ``block``, a folder, cannot be removed: it runs the command
    with a tmpfs mounted on ``block`` in a user and mount namespace of its own (rmdir of a mount
    point fails, for root too; the mount ends with the namespace). Where namespaces are not
    allowed, ``block``'s parent is made read-only instead (which root ignores: None then)."""
    unshare = shutil.which("unshare")
    mount = ["sh", "-c", 'mount -t tmpfs tmpfs "$0" && exec "$@"', str(block)]
    if unshare is not None:
        probe = subprocess.run([unshare, "-rm", *mount, "true"], capture_output=True)
        if probe.returncode == 0:
            return [unshare, "-rm", *mount]
    if os.geteuid() == 0:
        return None
    block.parent.chmod(0o500)
    return []


def test_a_removal_that_fails_leaves_the_study_to_delete_again(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    # The reported bug: the rows went first, so a failed rmtree left a traceback, half the files
    # and no study to delete again.
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    spec = load_spec(write_spec())
    storage = open_storage(url)
    name = "busy"
    ckpt = _checkpoint(spec, create_study(storage, name, spec))
    storage.engine.dispose()
    prefix = _blocked_removal(ckpt.parent)
    if prefix is None:
        pytest.skip("root without user namespaces: no folder here that root cannot remove")
    try:
        cmd = ["study", "delete", name, "--yes", "--storage", url]
        done = subprocess.run(
            [*prefix, sys.executable, "-m", "vivit_hpo", *cmd],
            capture_output=True,
            text=True,
            env=worker_env(url, tmp_path),
            cwd=tmp_path,
        )
    finally:
        ckpt.parent.parent.chmod(0o755)
    assert done.returncode == 2, done.stdout + done.stderr
    line = _one_error_line(done.stdout + done.stderr)
    assert "could not remove" in line and f"vivit-hpo study delete {name}` again" in line
    assert name in _names_in(url)  # still there: delete it again once the cause is fixed

    result = CliRunner().invoke(app, cmd)
    assert result.exit_code == 0, result.output
    assert name not in _names_in(url)
    assert not spec.study_dir(name).exists()


# Each in the one grammar: a YAML 1.2 number, a scalar filling a tuple, one axis of a tuple, a
# list, a YAML word.
_OVERRIDES = [
    "train.lr=1e-3",
    "train.betas=0.8",
    "model.core.kernel_size=4",
    "model.core.kernel_size[0]=4",
    "model.core.stride=2",
    "model.core.stem_channels=[8]",
    "data.stream=off",
]


def test_train_and_enqueue_read_an_override_alike(
    write_spec: Callable[..., Path], pg_url: str, study_name: str, tmp_path: Path
) -> None:
    # The base config as a user's YAML leaves most keys out; `train --set` writes into it,
    # `study enqueue --set` into the study's full base tree, which the worker then builds.
    base = {**TINY_BASE, "train": {**TINY_BASE["train"], "epochs": 3, "checkpoint_every": 1}}
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump(base))
    study = create(pg_url, study_name, write_spec(base={"config": base}, epochs=3))
    runner = CliRunner()
    for item in _OVERRIDES:
        args = ["study", "enqueue", study_name, "--set", item, "--storage", pg_url]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (item, result.output)
    spec = read_spec(open_storage(pg_url), study_name)
    trials = study.get_trials()
    assert len(trials) == len(_OVERRIDES)
    for item, t in zip(_OVERRIDES, trials, strict=True):
        via_enqueue = trial_config(spec.base_tree(), {}, t.user_attrs["extra_overrides"])
        via_train = load_run_config(config, [item])
        assert via_enqueue.to_dict() == via_train.to_dict(), item


_TAKES_LR = "lr takes a number in [0.001, 0.01] (log scale)"


@pytest.mark.parametrize(
    ("sets", "line"),
    [
        (["lr=abc"], f"--set lr='abc': not a number; {_TAKES_LR}"),
        (["lr=0.5"], f"--set lr=0.5: outside its range; {_TAKES_LR}"),
        (["patch=4"], "--set patch=4: not one of its choices; patch takes one of [2, 8]"),
        (
            ["patch=2", "stride=8"],
            "--set stride=8: larger than patch=2; stride takes one of [2] (<= patch=2)",
        ),
        (
            ["strides=2", "lr=1e-3"],
            "--set strides=2: not a parameter of the study's space (did you mean stride?); its "
            "parameters are embed_dim, heads, lr, patch, stride, and a dotted run-config key "
            "(e.g. train.batch_size=8) overrides any other setting for this trial",
        ),
    ],
    ids=["not-a-number", "outside-the-range", "not-a-choice", "above-its-bound", "unknown-name"],
)
def test_enqueue_refuses_a_value_the_space_cannot_take(
    sets: list[str], line: str, write_spec: Callable[..., Path], pg_url: str, study_name: str
) -> None:
    study = create(pg_url, study_name, write_spec())
    args = ["study", "enqueue", study_name, "--storage", pg_url]
    result = CliRunner().invoke(app, [*args, *(a for item in sets for a in ("--set", item))])
    assert result.exit_code == 2, result.output
    assert _one_error_line(result.output) == f"error: {line}"
    assert study.get_trials() == []  # nothing enqueued
    ok = CliRunner().invoke(
        app, [*args, "--set", "patch=2", "--set", "stride=2", "--set", "lr=1e-3"]
    )
    assert ok.exit_code == 0, ok.output
    (queued,) = study.get_trials()
    assert queued.system_attrs["fixed_params"] == {"patch": 2, "stride|patch=2": 2, "lr": 1e-3}


def _broken_session(folder: Path, like: Path, broken: str) -> Path:
    """A session file in ``folder`` that ``study create`` must refuse: NaN counts (and a NaN
    behaviour value), or no bins at all."""
    bad = folder / f"{broken}.h5"
    if broken == "nan":
        shutil.copy(like, bad)
        with h5py.File(bad, "a") as f:
            robs = f["robs"][()].astype(np.float32)
            robs[0, 0] = np.nan
            del f["robs"]
            f["robs"] = robs
            f["behavior"][1, 0] = np.nan
            f.attrs["name"] = broken
    else:
        with h5py.File(bad, "w") as f:
            f["stim"] = np.zeros((0, 16, 16), np.uint8)
            f["robs"] = np.zeros((0, 12), np.uint8)
            f.attrs["frame_rate"] = 60.0
    return bad


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        (
            "nan",
            "robs: 1 counts are NaN or Inf; set them to 0 and mark those bins invalid in `dfs` "
            "(and 1 more; run `vivit-hpo data inspect {folder}` for all)",
        ),
        ("empty", "stim: has 0 frames; a session needs at least one block of bins"),
    ],
)
def test_create_refuses_a_session_file_that_breaks_the_data_contract(
    broken: str,
    problem: str,
    write_spec: Callable[..., Path],
    sim_dir: Path,
    pg_url: str,
    study_name: str,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "sessions"
    folder.mkdir()
    for f in sorted(sim_dir.glob("*.h5")):
        shutil.copy(f, folder / f.name)
    bad = _broken_session(folder, next(sim_dir.glob("*.h5")), broken)
    spec = write_spec(data={"paths": [str(folder)]})
    args = ["study", "create", study_name, "--spec", str(spec), "--storage", pg_url]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert _one_error_line(result.output) == (
        f"error: data.paths: {bad}: {problem.format(folder=folder)}"
    )
    storage = open_storage(pg_url)
    assert study_name not in {s.study_name for s in storage.get_all_studies()}
    assert not (tmp_path / "artifacts" / study_name).exists()
    bad.unlink()  # the same folder without it is a study
    assert CliRunner().invoke(app, args).exit_code == 0
