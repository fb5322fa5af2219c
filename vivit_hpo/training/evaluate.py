"""Evaluation: predicted rates and bits per spike of every session of a split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vivit_hpo.data import SessionSet
from vivit_hpo.metrics import BPSAccumulator, SessionScore
from vivit_hpo.models import EncodingModel

__all__ = ["SessionPrediction", "evaluate", "predict"]


@dataclass(frozen=True)
class SessionPrediction:
    rates: np.ndarray  # (num_bins, N) predicted rates, spikes per bin
    bins: np.ndarray  # (num_bins,) indices into the session's time axis
    score: SessionScore


@torch.no_grad()
def predict(
    model: EncodingModel,
    data: SessionSet,
    split: str,
    batch_size: int,
    *,
    max_batches: int | None = None,
    keep_rates: bool = True,
) -> dict[str, SessionPrediction]:
    """Predicted rates of the samples of ``split``, session by session, with their BPS.

    The readout reads at its mean positions (eval mode). ``max_batches`` caps the batches of
    each session (a cheap estimate on large sessions); ``keep_rates=False`` keeps only scores.
    """
    was_training = model.training
    model.eval()
    device_type = next(model.parameters()).device.type
    accs = {m.name: BPSAccumulator(m.num_units) for m in data.metas}
    rates: dict[str, list[np.ndarray]] = {name: [] for name in accs}
    bins: dict[str, list[np.ndarray]] = {name: [] for name in accs}
    seen = dict.fromkeys(accs, 0)
    for batch in data.batches(split, batch_size, shuffle=False, seed=0):
        if max_batches is not None and seen[batch.session] >= max_batches:
            continue
        seen[batch.session] += 1
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=device_type == "cuda"):
            r = model(batch.stim, batch.session, batch.behavior).float()
        accs[batch.session].update(r, batch.robs, batch.dfs)
        if keep_rates:
            rates[batch.session].append(r.cpu().numpy())
            bins[batch.session].append(batch.bins.cpu().numpy())
    model.train(was_training)
    empty = np.zeros((0,), dtype=np.int64)
    return {
        name: SessionPrediction(
            rates=np.concatenate(rates[name]) if rates[name] else np.zeros((0, 0), np.float32),
            bins=np.concatenate(bins[name]) if bins[name] else empty,
            score=accs[name].result(),
        )
        for name in accs
        if seen[name]
    }


def evaluate(
    model: EncodingModel,
    data: SessionSet,
    split: str,
    batch_size: int,
    *,
    max_batches: int | None = None,
) -> dict[str, SessionScore]:
    """Bits per spike of every session on ``split`` (see :func:`predict`)."""
    preds = predict(model, data, split, batch_size, max_batches=max_batches, keep_rates=False)
    return {name: p.score for name, p in preds.items()}
