"""One run: trained, its best checkpoint scored, its ``summary.json`` written; and loaded back.

:func:`train_run` is what ``vivit-hpo train`` and :func:`vivit_hpo.api.train` do;
:func:`score_best` is how a run's best checkpoint is scored, by it and by a study's trials
(their ``test_bps``); :func:`load_run` reads a run folder back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vivit_hpo._io import atomic_write_text
from vivit_hpo.config import RunConfig
from vivit_hpo.data import SessionSet, load_sessions, oracle_bps
from vivit_hpo.data.types import SessionMeta
from vivit_hpo.errors import ConfigError
from vivit_hpo.metrics import SessionScore
from vivit_hpo.models import EncodingModel, build_model
from vivit_hpo.models.encoder import clip_geometry
from vivit_hpo.training.checkpoint import (
    best_checkpoints,
    load_checkpoint,
    read_run_config,
    read_sessions,
)
from vivit_hpo.training.evaluate import evaluate
from vivit_hpo.training.loop import EpochReport, Trainer

__all__ = [
    "SUMMARY_FILE",
    "TrainedRun",
    "best_checkpoint_path",
    "epoch_score",
    "load_run",
    "load_run_sessions",
    "min_frame_size",
    "oracle_scores",
    "run_summary",
    "score_best",
    "train_run",
]

SUMMARY_FILE = "summary.json"  # in the run folder, written by train_run


def epoch_score(row: dict[str, Any]) -> float:
    """An epoch's objective value from its ``metrics.json`` row (``EpochReport.to_dict``)."""
    return float(row.get("val_score", row["val_bps"]))


def min_frame_size(cfg: RunConfig) -> tuple[int, int] | None:
    """The smallest frame (H, W) the core accepts (one tubelet), for the data validation;
    None for cores of any frame size."""
    core = cfg.model.core
    return (core.kernel_size[1], core.kernel_size[2]) if core.kind == "vivit" else None


def load_run_sessions(paths: Sequence[str | Path], cfg: RunConfig) -> SessionSet:
    """The session files and folders ``paths``, validated for ``cfg`` (its data settings and
    the smallest frame its core takes)."""
    return load_sessions(paths, cfg.data, min_size=min_frame_size(cfg))


def oracle_scores(paths: Sequence[str | Path], split: str, cfg: RunConfig) -> dict[str, float]:
    """Oracle BPS per session of ``split`` where the data is simulated (an oracle.json beside)."""
    found: dict[str, float] = {}
    for folder in {p if p.is_dir() else p.parent for p in map(Path, paths)}:
        for name, per_split in (oracle_bps(folder, cfg.data) or {}).items():
            if split in per_split:
                found[name] = float(per_split[split])
    return found


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


def score_best(
    run_dir: str | Path,
    data: SessionSet,
    splits: Sequence[str],
    device: str | torch.device = "cpu",
    *,
    batch_size: int | None = None,
    on_batch: Callable[[], None] | None = None,
) -> dict[str, dict[str, SessionScore]]:
    """The scores (bits per spike, correlation...) of the run's best checkpoint on each of
    ``splits``: ``{split: {session: score}}``, every sample of the split predicted once.

    Args:
        run_dir: a run folder with a best-epoch checkpoint.
        data: the sessions the run was trained on.
        splits: ``val``, ``test``.
        device: where the model runs.
        batch_size: clips per batch; None: the run's ``train.batch_size``.
        on_batch: called after every batch (see :func:`~vivit_hpo.training.evaluate.predict`).
    """
    cfg, model, _ = load_run(run_dir, device)
    size = batch_size or cfg.train.batch_size
    return {s: evaluate(model, data, s, size, on_batch=on_batch) for s in splits}


def run_summary(
    trainer: Trainer,
    data: SessionSet,
    scores: dict[str, dict[str, SessionScore]],
    oracles: dict[str, dict[str, float]],
) -> dict[str, Any]:
    """The run's ``summary.json``: its clips, epochs and the best checkpoint's scores per split
    (``scores``, with the oracle where the data is simulated)."""
    return {
        "mode": trainer.clips.describe(),
        "clip_frames": trainer.clips.frames,
        "targets_per_clip": trainer.clips.num_targets,
        "best_epoch": trainer.best_epoch,
        "epochs_run": trainer.epoch,
        "response_kinds": {m.name: m.response_kind for m in data.metas},
        # `*_bps`: the Poisson score whatever the response kind (bits per spike for spikes).
        **{f"{s}_bps": {n: p.bps for n, p in scores[s].items()} for s in scores},
        **{f"{s}_corr": {n: p.corr for n, p in scores[s].items()} for s in scores},
        **{f"{s}_oracle_bps": oracles[s] for s in scores if oracles.get(s)},
    }


@dataclass(frozen=True)
class TrainedRun:
    """What :func:`train_run` did.

    Attributes:
        run_dir: the run folder (:func:`load_run` reads it back).
        best_epoch: the best epoch by validation score (None before any).
        epochs_run: epochs trained in all, a resumed run's earlier ones included.
        stopped_early: early stopping ended it.
        reports: this call's epochs, one report each.
        scores: ``{split: {session: score}}`` of the best checkpoint on the val and test splits
            the sessions have (empty when not scored).
        oracles: ``{split: {session: oracle BPS}}`` where the data is simulated.
        summary: what ``summary.json`` holds (None when not scored).
    """

    run_dir: Path
    best_epoch: int | None
    epochs_run: int
    stopped_early: bool
    reports: list[EpochReport]
    scores: dict[str, dict[str, SessionScore]]
    oracles: dict[str, dict[str, float]]
    summary: dict[str, Any] | None


def train_run(
    cfg: RunConfig,
    data: SessionSet,
    run_dir: str | Path,
    *,
    device: str | torch.device = "auto",
    paths: Sequence[str | Path] = (),
    on_step: Callable[[int, int], None] | None = None,
    on_start: Callable[[Trainer], None] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    score: bool = True,
) -> TrainedRun:
    """Train one model into ``run_dir`` (resuming the run it holds), score its best checkpoint
    on the val and test splits and write ``run_dir/summary.json`` (atomically).

    Args:
        cfg: the run config.
        data: the sessions (:func:`load_run_sessions`).
        run_dir: the run folder (config, checkpoints, ``metrics.json``, ``summary.json``).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:i``.
        paths: the session files and folders ``data`` came from, for the oracle of simulated
            data.
        on_step: ``on_step(batch_index, batches_per_epoch)`` after each batch.
        on_start: called with the trainer once it is built (resumed), before the first epoch.
        on_epoch: called with each epoch's report.
        score: score the best checkpoint and write ``summary.json``; False trains only.

    Raises:
        ConfigError: data without training or validation samples.
    """
    run_dir = Path(run_dir)
    trainer = Trainer(cfg, data, device=device, run_dir=run_dir, on_step=on_step)
    if on_start is not None:
        on_start(trainer)
    reports = []
    for report in trainer.epochs():
        reports.append(report)
        if on_epoch is not None:
            on_epoch(report)
    scores: dict[str, dict[str, SessionScore]] = {}
    oracles: dict[str, dict[str, float]] = {}
    summary = None
    if score:
        splits = [s for s in ("val", "test") if data.num_samples(s)]
        scores = score_best(run_dir, data, splits, trainer.device)
        oracles = {s: oracle_scores(paths, s, cfg) for s in splits}
        summary = run_summary(trainer, data, scores, oracles)
        atomic_write_text(run_dir / SUMMARY_FILE, json.dumps(summary, indent=1))
    return TrainedRun(
        run_dir,
        trainer.best_epoch,
        trainer.epoch,
        trainer.stopped_early,
        reports,
        scores,
        oracles,
        summary,
    )
