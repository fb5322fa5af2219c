"""Training and evaluation of one encoding model; one run end to end (:mod:`.run`)."""

from __future__ import annotations

from vivit_hpo.training.evaluate import SessionPrediction, evaluate, predict
from vivit_hpo.training.loop import (
    EpochReport,
    Trainer,
    accumulation_group,
    poisson_loss,
    resolve_device,
)
from vivit_hpo.training.run import TrainedRun, epoch_score, load_run, score_best, train_run

__all__ = [
    "EpochReport",
    "SessionPrediction",
    "TrainedRun",
    "Trainer",
    "accumulation_group",
    "epoch_score",
    "evaluate",
    "load_run",
    "poisson_loss",
    "predict",
    "resolve_device",
    "score_best",
    "train_run",
]
