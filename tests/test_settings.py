"""The ``VIVIT_HPO_*`` settings: read when asked (not at import), env var then default, a bad
value one line naming the variable; and no module but ``vivit_hpo.settings`` names one."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from vivit_hpo import settings
from vivit_hpo.errors import ConfigError, StorageError
from vivit_hpo.models.attention import attention_backend
from vivit_hpo.report.build import default_artifact_store_dir
from vivit_hpo.search.storage import give_up_s, resolve_storage_url, vivit_home
from vivit_hpo.search.worker import gpu_lock_dir

PACKAGE = Path(settings.__file__).resolve().parent
# The chaos rig and the test fixtures name the variables they set for the processes they start.
RIGS = (Path("bench/chaos"), Path("testing"))


@pytest.fixture(autouse=True)
def _unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for s in settings.ALL:
        monkeypatch.delenv(s.name, raising=False)


def test_every_setting_is_read_when_asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert vivit_home() == tmp_path.resolve()
    assert resolve_storage_url(None) == f"sqlite:///{tmp_path.resolve()}/storage/vivit-hpo.db"
    assert default_artifact_store_dir() == tmp_path.resolve() / "storage" / "artifacts"
    assert give_up_s() == 300.0
    assert settings.ARTIFACTS.get() is None and settings.GPU_LOCK_DIR.get() is None
    assert settings.ATTENTION.get() == "auto"

    home = tmp_path / "home"
    monkeypatch.setenv("VIVIT_HPO_HOME", str(home))
    # Defaults that depend on the home follow it.
    assert resolve_storage_url(None) == f"sqlite:///{home}/storage/vivit-hpo.db"
    assert default_artifact_store_dir() == home / "storage" / "artifacts"
    monkeypatch.setenv("VIVIT_HPO_STORAGE", "postgresql://u@h/db")
    monkeypatch.setenv("VIVIT_HPO_STORAGE_MAX_WAIT_S", " 2.5 ")
    monkeypatch.setenv("VIVIT_HPO_ARTIFACTS", str(tmp_path / "a" / ".." / "arts"))
    monkeypatch.setenv("VIVIT_HPO_ARTIFACT_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("VIVIT_HPO_GPU_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("VIVIT_HPO_ATTENTION", "MATH")
    monkeypatch.setenv("VIVIT_HPO_REFERENCE", str(tmp_path / "ref.py"))
    assert vivit_home() == home
    assert resolve_storage_url(None) == "postgresql://u@h/db"
    assert resolve_storage_url("sqlite:///x.db") == "sqlite:///x.db"  # --storage first
    assert give_up_s() == 2.5
    assert settings.ARTIFACTS.get() == tmp_path / "arts"
    assert default_artifact_store_dir() == tmp_path / "store"
    assert gpu_lock_dir() == tmp_path / "locks"
    assert attention_backend() == "math"
    assert settings.REFERENCE.get() == tmp_path / "ref.py"


def test_a_blank_value_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for s in settings.ALL:
        monkeypatch.setenv(s.name, "  ")
        assert s.raw() is None
        assert s.get() == s.default()


@pytest.mark.parametrize(
    ("setting", "value", "error", "says"),
    [
        (settings.STORAGE_MAX_WAIT_S, "soon", StorageError, "a number of seconds >= 0"),
        (settings.STORAGE_MAX_WAIT_S, "-1", StorageError, "a number of seconds >= 0"),
        (settings.STORAGE_MAX_WAIT_S, "inf", StorageError, "a number of seconds >= 0"),
        (settings.ATTENTION, "xformers", ConfigError, "one of auto, flash-attn, sdpa, math"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    setting: settings.Setting[object],
    value: str,
    error: type[Exception],
    says: str,
) -> None:
    monkeypatch.setenv(setting.name, value)
    with pytest.raises(error) as err:
        setting.get()
    msg = str(err.value)
    assert msg.startswith(f"{setting.name}={value!r}: expected {says}")
    assert "unset it" in msg and "\n" not in msg


def test_an_override_is_undone_after_its_block(monkeypatch: pytest.MonkeyPatch) -> None:
    with settings.ATTENTION.override("sdpa"):
        assert settings.ATTENTION.get() == "sdpa"
    assert "VIVIT_HPO_ATTENTION" not in os.environ
    monkeypatch.setenv("VIVIT_HPO_ATTENTION", "math")
    with settings.ATTENTION.override("sdpa"):
        assert settings.ATTENTION.get() == "sdpa"
    assert os.environ["VIVIT_HPO_ATTENTION"] == "math"


def _named_settings(tree: ast.AST) -> list[tuple[int, str]]:
    """Where a module spells out a ``VIVIT_HPO_*`` name: a string that is the whole name, or a
    keyword argument of that name (``dict(os.environ, VIVIT_HPO_HOME=...)``); prose that
    mentions one (a docstring, a help text) is not a read."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.keyword) and node.arg is not None:
            text = node.arg
        else:
            continue
        if text.startswith("VIVIT_HPO_") and text.isidentifier():
            found.append((getattr(node, "lineno", 0), text))
    return found


def test_only_the_settings_module_names_a_setting() -> None:
    named = {
        f"{path.relative_to(PACKAGE.parent)}:{line}: {name}"
        for path in PACKAGE.rglob("*.py")
        if not any(path.relative_to(PACKAGE).is_relative_to(rig) for rig in RIGS)
        and path != Path(settings.__file__).resolve()
        for line, name in _named_settings(ast.parse(path.read_text(), str(path)))
    }
    assert not named, "read these through vivit_hpo.settings:\n" + "\n".join(sorted(named))
    # ... and every variable the settings module names is one of its settings.
    tree = ast.parse(Path(settings.__file__).read_text())
    assert {n for _, n in _named_settings(tree)} == {s.name for s in settings.ALL}
