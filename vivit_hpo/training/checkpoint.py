"""Checkpoint files of a run directory, written atomically and read with ``weights_only=True``.

A run directory holds::

    config.yaml            the resolved RunConfig
    sessions.json          the SessionMeta of every session the model has a readout for
    metrics.json           every epoch's report so far
    checkpoints/last.pt    full state (model, optimiser, schedule, RNG, epoch): what resume reads
    checkpoints/epochNNN.pt          full state every ``checkpoint_every`` epochs
    checkpoints/best-epochNNN.pt     model weights of the ``keep_best`` best epochs by val BPS
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import yaml

from vivit_hpo._io import atomic_write, atomic_write_text
from vivit_hpo.config import RunConfig, parse_run_config
from vivit_hpo.data.types import SessionMeta
from vivit_hpo.errors import ConfigError

__all__ = [
    "atomic_write_text",
    "best_checkpoints",
    "load_checkpoint",
    "read_run_config",
    "read_sessions",
    "resume_state",
    "save_checkpoint",
    "write_run_files",
]

_BEST = re.compile(r"best-epoch(\d+)\.pt$")
_FULL = re.compile(r"^epoch(\d+)\.pt$")

_log = logging.getLogger(__name__)


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """``torch.save`` through :func:`~vivit_hpo._io.atomic_write`: a crash never leaves half a
    file. Through a Python file, not a path: a full disk then raises the OS's own error (ENOSPC,
    EFBIG), chained under torch's writer error, instead of an iostream error."""
    atomic_write(path, lambda f: torch.save(dict(state), f))


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no pickled code runs)."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise ConfigError(f"{path}: not a readable checkpoint ({e.__class__.__name__})") from e


def resume_state(ckpt_dir: Path, device: torch.device | str = "cpu") -> dict[str, Any] | None:
    """The newest full state that loads: ``last.pt``, else the ``epochNNN.pt`` files newest
    first; None when there is none (the run starts from scratch).

    A file that does not load (torn by a crash or a power cut on a file system that lost the
    rename's order, a disk fault) is passed over, with one warning line that names it and says
    where the run resumes from instead, so that a damaged ``last.pt`` costs epochs, not the run.
    """
    full = sorted(
        ((int(m.group(1)), p) for p in ckpt_dir.glob("epoch*.pt") if (m := _FULL.match(p.name))),
        reverse=True,
    )
    unreadable: list[str] = []
    for path in [ckpt_dir / "last.pt", *(p for _, p in full)]:
        if not path.is_file():
            continue
        try:
            state = load_checkpoint(path, device)
        except ConfigError as e:
            unreadable.append(str(e))
            continue
        if unreadable:
            _log.warning("%s; resuming from %s instead", "; ".join(unreadable), path.name)
        return state
    if unreadable:
        _log.warning("%s; no other full checkpoint: starting from scratch", "; ".join(unreadable))
    return None


def best_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """The ``best-epochNNN.pt`` files of a run as (epoch, path), in epoch order."""
    found = []
    for p in ckpt_dir.glob("best-epoch*.pt"):
        m = _BEST.search(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def write_run_files(run_dir: Path, cfg: RunConfig, metas: list[SessionMeta]) -> None:
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    atomic_write_text(run_dir / "sessions.json", json.dumps([asdict(m) for m in metas], indent=1))


def read_run_config(run_dir: Path) -> RunConfig:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(
            f"{run_dir}: no config.yaml; pass the RUN_DIR that `vivit-hpo train` wrote"
        )
    return parse_run_config(yaml.safe_load(path.read_text()) or {}, str(path))


def read_sessions(run_dir: Path) -> list[SessionMeta]:
    path = run_dir / "sessions.json"
    if not path.is_file():
        raise ConfigError(
            f"{run_dir}: no sessions.json; pass the RUN_DIR that `vivit-hpo train` wrote"
        )
    metas = []
    for m in json.loads(path.read_text()):
        if "stim_mean" not in m:
            raise ConfigError(
                f"{path}: session {m.get('name')!r} has no stimulus statistics (the run was "
                "trained by an older version, on frames not standardised); retrain the run"
            )
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in m.items()}
        metas.append(SessionMeta(**fields))
    return metas
