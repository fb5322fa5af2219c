"""Fixtures of the study-service tests (helpers in search_helpers.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from search_helpers import tiny_spec_tree


@pytest.fixture()
def write_spec(sim_dir: Path, tmp_path: Path) -> Callable[..., Path]:
    """``write_spec(**changes) -> path`` of a tiny spec (top-level keys replaced by changes)."""

    def write(**changes: Any) -> Path:
        path = tmp_path / f"spec-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(yaml.safe_dump(tiny_spec_tree(sim_dir, tmp_path / "artifacts", **changes)))
        return path

    return write


@pytest.fixture()
def study_name(pg_url: str) -> Iterator[str]:
    """A unique study name; the study is deleted from PostgreSQL afterwards."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    from vivit_hpo.search.storage import open_storage

    storage = open_storage(pg_url)
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:
        pass
    finally:
        storage.engine.dispose()
