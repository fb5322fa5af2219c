"""Loading a trained run back from its directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vivit_hpo.config import RunConfig
from vivit_hpo.data.types import SessionMeta
from vivit_hpo.errors import ConfigError
from vivit_hpo.models import EncodingModel, build_model
from vivit_hpo.models.encoder import clip_geometry
from vivit_hpo.training.checkpoint import (
    best_checkpoints,
    load_checkpoint,
    read_run_config,
    read_sessions,
)

__all__ = ["best_checkpoint_path", "epoch_score", "load_run", "min_frame_size"]


def epoch_score(row: dict[str, Any]) -> float:
    """An epoch's objective value from its ``metrics.json`` row (``EpochReport.to_dict``)."""
    return float(row.get("val_score", row["val_bps"]))


def min_frame_size(cfg: RunConfig) -> tuple[int, int] | None:
    """The smallest frame (H, W) the core accepts (one tubelet), for the data validation;
    None for cores of any frame size."""
    core = cfg.model.core
    return (core.kernel_size[1], core.kernel_size[2]) if core.kind == "vivit" else None


def best_checkpoint_path(run_dir: Path) -> Path:
    """The kept best-epoch checkpoint with the highest validation score in metrics.json (the
    run's ``train.objective``; ``val_bps`` in runs from before it was recorded)."""
    kept = dict(best_checkpoints(run_dir / "checkpoints"))
    metrics = run_dir / "metrics.json"
    scores = (
        {r["epoch"]: epoch_score(r) for r in json.loads(metrics.read_text())}
        if metrics.is_file()
        else {}
    )
    ranked = [e for e in kept if e in scores]
    if not ranked:
        raise ConfigError(f"{run_dir}: no best-epoch checkpoint; has the run finished an epoch?")
    return kept[max(ranked, key=scores.__getitem__)]


def load_run(
    run_dir: str | Path, device: str | torch.device = "cpu", *, which: str = "best"
) -> tuple[RunConfig, EncodingModel, list[SessionMeta]]:
    """The config, model (in eval mode) and sessions of a run directory.

    ``which`` is ``best`` (the best epoch by validation BPS) or ``last`` (the weights' moving
    average at the last epoch when the run kept one, as validation scored it).
    """
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    metas = read_sessions(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    if which == "best":
        state = load_checkpoint(best_checkpoint_path(run_dir), device)
    elif which == "last":
        path = ckpt_dir / "last.pt"
        if not path.is_file():
            raise ConfigError(f"{run_dir}: no checkpoints/last.pt")
        state = load_checkpoint(path, device)
    else:
        raise ConfigError(f"which={which!r}: expected 'best' or 'last'")
    model = build_model(cfg.model, metas, clip_geometry(cfg)).to(device)
    model.load_state_dict(state.get("ema", state["model"]))
    model.eval()
    return cfg, model, metas
