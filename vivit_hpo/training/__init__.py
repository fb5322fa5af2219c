"""Training and evaluation of one encoding model."""

from __future__ import annotations

from vivit_hpo.training.evaluate import SessionPrediction, evaluate, predict
from vivit_hpo.training.loop import (
    EpochReport,
    Trainer,
    accumulation_group,
    poisson_loss,
    resolve_device,
)
from vivit_hpo.training.run import epoch_score, load_run

__all__ = [
    "EpochReport",
    "SessionPrediction",
    "Trainer",
    "accumulation_group",
    "epoch_score",
    "evaluate",
    "load_run",
    "poisson_loss",
    "predict",
    "resolve_device",
]
