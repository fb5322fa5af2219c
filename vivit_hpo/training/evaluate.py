"""Evaluation: predicted rates and bits per spike of every session of a split.

Evaluation uses the model's own clip geometry (the one it trained with): each split is tiled
with clips so that every sample (target bin) is predicted exactly once, with at least
``num_lags`` frames of history (see :mod:`vivit_hpo.data.clips`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from vivit_hpo.data import SessionSet
from vivit_hpo.data.stream import prefetch
from vivit_hpo.metrics import BPSAccumulator, SessionScore
from vivit_hpo.models import EncodingModel

__all__ = ["SessionPrediction", "evaluate", "predict"]


@dataclass(frozen=True)
class SessionPrediction:
    rates: np.ndarray  # (num_bins, N) predicted rates, spikes per bin, in bin order
    bins: np.ndarray  # (num_bins,) ascending indices into the session's time axis
    score: SessionScore


@torch.no_grad()
def predict(
    model: EncodingModel,
    data: SessionSet,
    split: str,
    batch_size: int,
    *,
    max_bins: int | None = None,
    seed: int = 0,
    keep_rates: bool = True,
    on_batch: Callable[[], None] | None = None,
) -> dict[str, SessionPrediction]:
    """Predicted rates of the samples of ``split``, session by session, with their BPS.

    The readout reads at its mean positions (eval mode); the data are batched as the model's
    clips, on the model's device. ``max_bins`` scores, per session, a seeded set of whole
    chunks of at most ``max_bins`` target bins spread over the split (a cheap estimate on large
    sessions), every bin in them exactly once: the same bins for the same ``seed`` whatever the
    model's clips or ``batch_size`` (see :meth:`SessionSet.eval_segments`);
    ``keep_rates=False`` keeps only scores. ``on_batch`` is called after every batch (a long
    pass shows its progress: the study's stall watchdog).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    if data.device != device:
        data = data.to(device)
    data = data.with_clips(model.clips)
    accs = {m.name: BPSAccumulator(m.num_units) for m in data.metas}
    rates: dict[str, list[torch.Tensor]] = {name: [] for name in accs}
    bins: dict[str, list[torch.Tensor]] = {name: [] for name in accs}
    seen = dict.fromkeys(accs, 0)
    batches = prefetch(data.batches(split, batch_size, shuffle=False, seed=seed, max_bins=max_bins))
    for batch in batches:
        seen[batch.session] += 1
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            r = model(batch.stim, batch.session, batch.behavior).float()  # (B, P, N)
        # Targets past a segment's end have dfs 0: the accumulator leaves them out, no sync.
        accs[batch.session].update(
            r.flatten(0, 1), batch.robs.flatten(0, 1), batch.dfs.flatten(0, 1)
        )
        if keep_rates:
            rates[batch.session].append(r.flatten(0, 1).cpu())
            bins[batch.session].append(batch.bins.flatten().cpu())
        if on_batch is not None:
            on_batch()
    model.train(was_training)
    out = {}
    for name, acc in accs.items():
        if not seen[name]:
            continue
        r_np, b_np = np.zeros((0, 0), np.float32), np.zeros((0,), dtype=np.int64)
        if rates[name]:
            b_all = torch.cat(bins[name]).numpy()
            keep = b_all >= 0
            order = np.argsort(b_all[keep], kind="stable")
            b_np = b_all[keep][order]
            r_np = torch.cat(rates[name]).numpy()[keep][order]
        out[name] = SessionPrediction(rates=r_np, bins=b_np, score=acc.result())
    return out


def evaluate(
    model: EncodingModel,
    data: SessionSet,
    split: str,
    batch_size: int,
    *,
    max_bins: int | None = None,
    seed: int = 0,
    on_batch: Callable[[], None] | None = None,
) -> dict[str, SessionScore]:
    """Bits per spike of every session on ``split`` (see :func:`predict`)."""
    preds = predict(
        model,
        data,
        split,
        batch_size,
        max_bins=max_bins,
        seed=seed,
        keep_rates=False,
        on_batch=on_batch,
    )
    return {name: p.score for name, p in preds.items()}
