"""Opening a study, on a real SQLite file and the test PostgreSQL: ``get_storage`` takes a URL,
None or an opened storage, and every entry point that opens an existing study (the one
opener, the API, the worker, a report's snapshot and the commands on top) says the same one
line for a study that is not there."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.storages import BaseStorage
from typer.testing import CliRunner

from vivit_hpo import api
from vivit_hpo.cli import app
from vivit_hpo.errors import VivitHpoError
from vivit_hpo.report.build import write_study_report
from vivit_hpo.report.snapshot import take_snapshot
from vivit_hpo.search.coordinator import run_study
from vivit_hpo.search.spec import load_spec
from vivit_hpo.search.storage import get_storage, open_storage, sqlite_path
from vivit_hpo.search.study import StudyError, create_study, load_study
from vivit_hpo.search.worker import open_study


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path, pg_url: str) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'studies.db'}"
    return pg_url


@pytest.fixture()
def present(url: str) -> Iterator[str]:
    """The name of a plain Optuna study in ``url``, deleted afterwards."""
    name = f"present-{uuid.uuid4().hex[:10]}"
    storage = open_storage(url)
    optuna.create_study(storage=storage, study_name=name, direction="maximize")
    yield name
    optuna.delete_study(study_name=name, storage=storage)
    storage.engine.dispose()


def _names(storage: BaseStorage) -> set[str]:
    return {s.study_name for s in storage.get_all_studies()}


def test_get_storage_opens_a_url_and_passes_a_storage_through(url: str, present: str) -> None:
    opened = get_storage(url)
    assert isinstance(opened, optuna.storages.RDBStorage)
    assert present in _names(opened)
    assert get_storage(opened) is opened  # nothing opened twice
    assert load_study(opened, present, require_spec=False).study_name == present


def test_get_storage_of_none_is_the_default_url(
    url: str, present: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIVIT_HPO_STORAGE", url)
    assert present in _names(get_storage(None))
    monkeypatch.delenv("VIVIT_HPO_STORAGE")
    monkeypatch.setenv("VIVIT_HPO_HOME", str(tmp_path / "home"))
    embedded = get_storage(None)  # the embedded default, its storage/ folder created
    assert embedded.get_all_studies() == []
    optuna.create_study(storage=embedded, study_name="here")
    db = sqlite_path(None)
    assert db is not None and db.is_file() and db.is_relative_to(tmp_path / "home")
    assert _names(get_storage(f"sqlite:///{db}")) == {"here"}


def _message(open_it: Callable[[], Any]) -> str:
    with pytest.raises(VivitHpoError) as got:
        open_it()
    assert isinstance(got.value, StudyError), repr(got.value)
    return str(got.value)


def test_a_missing_study_is_the_same_one_line_error_everywhere(
    url: str, present: str, tmp_path: Path
) -> None:
    missing = f"missing-{uuid.uuid4().hex[:10]}"
    storage = open_storage(url)
    try:
        expected = _message(lambda: load_study(url, missing))
        assert "\n" not in expected, expected
        assert expected.startswith(f"study {missing!r} does not exist (studies: "), expected
        opens: dict[str, Callable[[], Any]] = {
            "load_study(storage)": lambda: load_study(storage, missing),
            "load_study(any study)": lambda: load_study(url, missing, require_spec=False),
            "api.load_study": lambda: api.load_study(missing, storage=url),
            "worker.open_study": lambda: open_study(missing, url),
            "take_snapshot(url)": lambda: take_snapshot(url, missing),
            "take_snapshot(storage)": lambda: take_snapshot(storage, missing),
            "write_study_report": lambda: write_study_report(url, missing, tmp_path / "r.html"),
        }
        said = {where: _message(open_it) for where, open_it in opens.items()}
        assert said == dict.fromkeys(opens, expected)
        out = str(tmp_path / "report.html")
        commands = {
            "study show": ["study", "show", missing, "--storage", url],
            "report": ["report", missing, "--storage", url, "--out", out],
            "worker": ["worker", missing, "--storage", url],
        }
        for where, args in commands.items():
            res = CliRunner().invoke(app, args)
            assert res.exit_code == 2, (where, res.output)
            assert res.output.strip().splitlines()[-1] == f"error: {expected}", (where, res.output)
        assert not (tmp_path / "r.html").exists() and not Path(out).exists()
    finally:
        storage.engine.dispose()


def test_run_says_what_to_do_with_a_study_it_cannot_run(
    url: str, present: str, write_spec: Callable[..., Path]
) -> None:
    """``run NAME [--spec FILE]`` stops before any worker starts, with one line saying what to
    do: no such study and no spec to create it from, a study made from another spec, or one
    that vivit-hpo did not make (whatever the spec)."""

    def run(name: str, spec: Path | None = None) -> str:
        return _message(lambda: run_study(name, spec, url, devices=["cpu"]))

    missing = f"missing-{uuid.uuid4().hex[:10]}"
    assert run(missing) == f"study {missing!r} does not exist; pass --spec FILE to create it"
    foreign = f"study {present!r} has no vivit-hpo spec; it was not made by vivit-hpo"
    assert run(present) == foreign and run(present, write_spec()) == foreign
    made = f"made-{uuid.uuid4().hex[:10]}"
    storage = open_storage(url)
    try:
        create_study(storage, made, load_spec(write_spec()))
        assert run(made, write_spec(budget={"n_trials": 7}, epochs=4)) == (
            f"study {made!r} exists with another spec (differs in: epochs, budget); omit --spec "
            "to continue it, or use a new study name"
        )
        assert len(load_study(storage, made).trials) == 0  # no worker ran
        assert missing not in _names(storage)
    finally:
        optuna.delete_study(study_name=made, storage=storage)
        storage.engine.dispose()
