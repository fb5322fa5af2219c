"""Every ``VIVIT_HPO_*`` environment setting, in one place.

Each setting is a :class:`Setting`: its variable's name, what it accepts, its default and what it
is for. :meth:`Setting.get` resolves it when it is called, never at import (a test, or a process
that changes its own environment, sees the new value): the variable when it is set to something
other than blanks, else the default. A value the setting cannot take raises the setting's error
class, in one line naming the variable and what it accepts.

- :data:`HOME` ``VIVIT_HPO_HOME``: a folder; default the current directory.
- :data:`STORAGE` ``VIVIT_HPO_STORAGE``: the storage URL; default
  ``sqlite:///<home>/storage/vivit-hpo.db``.
- :data:`STORAGE_MAX_WAIT_S` ``VIVIT_HPO_STORAGE_MAX_WAIT_S``: seconds; default 300.
- :data:`ARTIFACTS` ``VIVIT_HPO_ARTIFACTS``: a folder; unset, the spec's ``artifacts.dir``.
- :data:`ARTIFACT_STORE` ``VIVIT_HPO_ARTIFACT_STORE``: a folder; default
  ``<home>/storage/artifacts``.
- :data:`GPU_LOCK_DIR` ``VIVIT_HPO_GPU_LOCK_DIR``: a folder; unset, a folder of this user's.
- :data:`ATTENTION` ``VIVIT_HPO_ATTENTION``: ``auto``, ``flash-attn``, ``sdpa`` or ``math``;
  default ``auto``.
- :data:`REFERENCE` ``VIVIT_HPO_REFERENCE``: a file; default
  ``<repo>/../shared/reference/ref_vivit_bench.py``.

This module imports nothing of the project but its errors, so that every layer may read it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from vivit_hpo.errors import ConfigError, StorageError, VivitHpoError

__all__ = [
    "ALL",
    "ARTIFACTS",
    "ARTIFACT_STORE",
    "ATTENTION",
    "ATTENTION_CHOICES",
    "EMBEDDED_DB",
    "GPU_LOCK_DIR",
    "HOME",
    "REFERENCE",
    "STORAGE",
    "STORAGE_MAX_WAIT_S",
    "Setting",
    "env_override",
]

T = TypeVar("T")


@contextmanager
def env_override(name: str, value: str) -> Iterator[None]:
    """Set the environment variable ``name`` to ``value`` inside the block, then restore it
    (unset again when it was unset before)."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One environment setting, read when :meth:`get` is called.

    Attributes:
        name: the environment variable.
        doc: what the setting is for.
        accepts: what a value may be, as the error says it ("a number of seconds >= 0").
        default_doc: the default, in words, as the error and the docs say it.
        parse: the value (stripped of blanks) -> the setting; raises ValueError for a value
            it cannot take.
        default: the setting when the variable is unset or blank (called each time: a default
            may depend on another setting, e.g. on :data:`HOME`).
        error: what a value ``parse`` refuses raises (the error class of the setting's area).
    """

    name: str
    doc: str
    accepts: str
    default_doc: str
    parse: Callable[[str], T]
    default: Callable[[], T]
    error: type[VivitHpoError] = ConfigError

    def raw(self) -> str | None:
        """The variable's value stripped of blanks; None when it is unset or blank."""
        return os.environ.get(self.name, "").strip() or None

    def get(self) -> T:
        """The variable parsed, else the default.

        Raises:
            VivitHpoError: (:attr:`error`) the variable holds a value the setting cannot take.
        """
        raw = self.raw()
        if raw is None:
            return self.default()
        try:
            return self.parse(raw)
        except ValueError as e:
            raise self.error(
                f"{self.name}={raw!r}: expected {self.accepts}; fix it, or unset it for the "
                f"default ({self.default_doc})"
            ) from e

    def override(self, value: str) -> AbstractContextManager[None]:
        """The variable set to ``value`` inside a ``with`` block (:func:`env_override`)."""
        return env_override(self.name, value)


def _resolved_path(raw: str) -> Path:
    return Path(raw).expanduser().resolve()


def _seconds(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value) or value < 0:
        raise ValueError(raw)
    return value


ATTENTION_CHOICES = ("auto", "flash-attn", "sdpa", "math")


def _attention(raw: str) -> str:
    value = raw.lower()
    if value not in ATTENTION_CHOICES:
        raise ValueError(raw)
    return value


HOME: Setting[Path] = Setting(
    name="VIVIT_HPO_HOME",
    doc="The folder that holds ``storage/`` (the embedded database, the dashboard's artifact "
    "store) and the default ``artifacts/``.",
    accepts="a folder",
    default_doc="the current directory",
    parse=lambda raw: Path(raw).resolve(),
    default=lambda: Path(".").resolve(),
)

EMBEDDED_DB = "vivit-hpo.db"  # the embedded database's file, in <home>/storage/

STORAGE: Setting[str] = Setting(
    name="VIVIT_HPO_STORAGE",
    doc="The study storage URL when ``--storage`` is not given (``postgresql://...`` or "
    "``sqlite:///...``; checked when it is opened).",
    accepts="a postgresql:// or sqlite:/// URL",
    default_doc=f"the embedded sqlite:///<home>/storage/{EMBEDDED_DB}",
    parse=str,
    default=lambda: f"sqlite:///{HOME.get() / 'storage' / EMBEDDED_DB}",
)

STORAGE_MAX_WAIT_S: Setting[float] = Setting(
    name="VIVIT_HPO_STORAGE_MAX_WAIT_S",
    doc="How long one storage call is retried through a database outage before it is given "
    "up (seconds).",
    accepts="a number of seconds >= 0 (e.g. 300)",
    default_doc="300 s",
    parse=_seconds,
    default=lambda: 300.0,
    error=StorageError,
)

ARTIFACTS: Setting[Path | None] = Setting(
    name="VIVIT_HPO_ARTIFACTS",
    doc="The artifacts root on this machine, over the spec's ``artifacts.dir`` (a container or "
    "another node that mounts the shared artifact folder elsewhere). Unset: the spec's "
    "``artifacts.dir``, else ``<home>/artifacts`` "
    "(:meth:`~vivit_hpo.search.spec.StudySpec.artifacts_root`).",
    accepts="a folder",
    default_doc="the spec's artifacts.dir",
    parse=_resolved_path,
    default=lambda: None,
)

ARTIFACT_STORE: Setting[Path] = Setting(
    name="VIVIT_HPO_ARTIFACT_STORE",
    doc="The file-system artifact store that reports are uploaded to and optuna-dashboard "
    "serves them from.",
    accepts="a folder",
    default_doc="<home>/storage/artifacts",
    parse=_resolved_path,
    default=lambda: HOME.get() / "storage" / "artifacts",
)

GPU_LOCK_DIR: Setting[Path | None] = Setting(
    name="VIVIT_HPO_GPU_LOCK_DIR",
    doc="The folder of the GPU lock files, taken as it is (containers share one through a "
    "bind mount). Unset: this user's own folder "
    "(:func:`~vivit_hpo.search.devices.gpu_lock_dir`).",
    accepts="a folder",
    default_doc="a folder of this user's",
    parse=Path,
    default=lambda: None,
)

ATTENTION: Setting[str] = Setting(
    name="VIVIT_HPO_ATTENTION",
    doc="The attention backend over the automatic choice "
    "(:func:`~vivit_hpo.models.attention.attention_backend`); case-insensitive.",
    accepts=f"one of {', '.join(ATTENTION_CHOICES)}",
    default_doc="auto",
    parse=_attention,
    default=lambda: "auto",
)

REFERENCE: Setting[Path] = Setting(
    name="VIVIT_HPO_REFERENCE",
    doc="The reference ViViT (``ref_vivit_bench.py``) that ``vivit-hpo bench`` times ours against.",
    accepts="a file",
    default_doc="<repo>/../shared/reference/ref_vivit_bench.py",
    parse=Path,
    default=lambda: (
        Path(__file__).resolve().parents[2] / "shared" / "reference" / "ref_vivit_bench.py"
    ),
)

ALL: tuple[Setting[Any], ...] = (
    HOME,
    STORAGE,
    STORAGE_MAX_WAIT_S,
    ARTIFACTS,
    ARTIFACT_STORE,
    GPU_LOCK_DIR,
    ATTENTION,
    REFERENCE,
)
