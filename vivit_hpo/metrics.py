"""Bits per spike and correlation, exactly as ``../shared/data-contract.md`` defines them.

For unit n over the evaluated bins B_n (the bins of the split where ``dfs`` is 1), with predicted
rate λ and counts y::

    ȳ_n   = Σ_B y / |B_n|                     (the null: the mean on the evaluated data itself)
    LL    = Σ_B (y · ln λ − λ)
    LL0   = Σ_B (y · ln ȳ_n − ȳ_n) = Σ_B y · ln ȳ_n − Σ_B y
    bps_n = (LL − LL0) / (ln 2 · Σ_B y)

Units with no valid spike are left out (NaN in ``bps_per_unit``) and counted. A session's BPS is
the unclamped mean of its units' bps; the pooled value is Σ(LL − LL0) / (ln 2 · Σ y) over units.
A session with no valid spike at all is likewise left out of the mean over sessions, and named
(:func:`mean_over_sessions`).

``ln λ`` is computed as ``ln max(λ, RATE_FLOOR)`` so that a rate of exactly 0 where a spike
occurred costs a large but finite penalty (about 41 nats per spike at 1e-18) instead of −inf;
the ``−λ`` term uses λ unchanged. Positive rates above the floor are unaffected.

The same formula scores calcium traces (a session's ``response_kind``), but there y is no spike
count and the number is no bits per spike: :func:`score_label` names it, and
:func:`leads_with_corr` says when the correlation should come first. A study or run may instead
maximise the correlation (``objective: corr``); :func:`objective_label` names the value of
either objective wherever it is shown, and :func:`mixed_kinds_note` says when sessions mix kinds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "BPS_LABEL",
    "CORR_LABEL",
    "GAIN_HEADER",
    "GAIN_LABEL",
    "OBJECTIVES",
    "RATE_FLOOR",
    "BPSAccumulator",
    "SessionScore",
    "SplitScore",
    "bits_per_spike",
    "leads_with_corr",
    "mean_over_sessions",
    "mixed_kinds_note",
    "objective_label",
    "score_label",
]

RATE_FLOOR = 1e-18  # spikes per bin; lower bound of λ inside ln λ only
_LN2 = math.log(2.0)
BPS_LABEL = "bits per spike"
# The Poisson score of calcium traces (in bits, as for spikes), never called bits per spike.
GAIN_LABEL = "Poisson log-likelihood gain per unit of response"
GAIN_HEADER = "LL gain/resp"  # GAIN_LABEL as a table's column header
CORR_LABEL = "correlation (r)"
# What a study or run maximises: the mean over sessions of the validation BPS (the Poisson
# score), or of the mean per-unit correlation (``train.objective``, a spec's ``objective``).
OBJECTIVES = ("bps", "corr")


def leads_with_corr(kinds: Iterable[str]) -> bool:
    """True when sessions of these response kinds are shown with the correlation first: any
    that is not spike counts (``calcium``), whose Poisson score is no bits per spike."""
    return any(k != "spikes" for k in kinds)


def score_label(kinds: Iterable[str], *, short: bool = False) -> str:
    """The name of the Poisson score of sessions of these response kinds.

    ``bits per spike`` (``BPS`` when ``short``) when every session holds spike counts, else
    :data:`GAIN_LABEL` (the same number: for spike counts a unit of response is a spike).
    """
    if leads_with_corr(kinds):
        return GAIN_LABEL
    return "BPS" if short else BPS_LABEL


def objective_label(objective: str, kinds: Iterable[str], *, header: bool = False) -> str:
    """The name of a value of ``objective`` on sessions of these response kinds, the one
    place the CLI and the report take it from.

    ``corr``: :data:`CORR_LABEL` (``r`` as a ``header``). ``bps``: ``BPS`` for spike counts;
    where a session is not (calcium), :data:`GAIN_LABEL` (:data:`GAIN_HEADER` as a header),
    never bits per spike.
    """
    if objective == "corr":
        return "r" if header else CORR_LABEL
    if leads_with_corr(kinds):
        return GAIN_HEADER if header else GAIN_LABEL
    return "BPS"


def mixed_kinds_note(kinds: Iterable[str]) -> str | None:
    """One line saying that sessions mix spike counts and other responses, or None."""
    got = set(kinds)
    if "spikes" not in got or len(got) < 2:
        return None
    others = ", ".join(sorted(got - {"spikes"}))
    return (
        f"the sessions mix spike counts and {others} traces: the Poisson score of the mean "
        f"over sessions is no bits per spike ({GAIN_LABEL}); the correlation compares them alike"
    )


@dataclass(frozen=True)
class SessionScore:
    """The scores of one session on one split.

    Attributes:
        bps_per_unit: (N,) bits per spike per unit; NaN for units left out (no valid spike).
        bps: mean of ``bps_per_unit`` over the included units (NaN if none is included).
        pooled_bps: Σ_n (LL − LL0) / (ln 2 · Σ_n Σ y) over the included units.
        corr_per_unit: (N,) Pearson r of rate vs count over each unit's valid bins; NaN where a
            unit has fewer than 2 valid bins or a constant rate or count.
        corr: mean of ``corr_per_unit`` over units where it is defined (NaN if none).
        num_excluded: units left out of the BPS for having no valid spike.
        num_spikes: Σ y over the valid bins of the included units.
        num_bins: (N,) number of valid bins per unit.
    """

    bps_per_unit: np.ndarray
    bps: float
    pooled_bps: float
    corr_per_unit: np.ndarray
    corr: float
    num_excluded: int
    num_spikes: float
    num_bins: np.ndarray

    @property
    def num_units(self) -> int:
        return int(self.bps_per_unit.shape[0])


def _nanmean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


class BPSAccumulator:
    """Streaming bits per spike (and Pearson r) of one session over batches of bins.

    Sums are kept per unit in float64 on the device of the first batch, so evaluation on the GPU
    never syncs until :meth:`result`. Feed every evaluated bin exactly once.

    Args:
        num_units: N, the number of units of the session.
    """

    def __init__(self, num_units: int) -> None:
        if num_units < 1:
            raise ValueError(f"num_units={num_units} must be >= 1")
        self.num_units = num_units
        self._sums: torch.Tensor | None = None  # (7, N) float64, rows as in _ROWS

    # Row order of self._sums.
    _Y, _M, _LL, _L, _LL2, _Y2, _YL = range(7)

    def update(self, rates: torch.Tensor, robs: torch.Tensor, dfs: torch.Tensor) -> None:
        """Add a batch of bins.

        Args:
            rates: (B, N) predicted rates λ, spikes per bin, ≥ 0.
            robs: (B, N) observed counts y.
            dfs: (B, N) 1 where the count is valid, 0 where it is not (bins left out).
        """
        if rates.shape != robs.shape or rates.shape != dfs.shape:
            raise ValueError(
                f"rates {tuple(rates.shape)}, robs {tuple(robs.shape)} and dfs "
                f"{tuple(dfs.shape)} must have the same shape (B, N)"
            )
        if rates.ndim != 2 or rates.shape[1] != self.num_units:
            raise ValueError(f"expected (B, {self.num_units}) tensors, got {tuple(rates.shape)}")
        lam = rates.detach().to(torch.float64)  # (B, N)
        m = dfs.detach().to(device=lam.device, dtype=torch.float64) > 0  # (B, N) bool
        zero = torch.zeros((), dtype=torch.float64, device=lam.device)
        # torch.where instead of a product: a masked-out bin must not contribute even if its
        # count or rate is garbage (NaN x 0 is NaN).
        y = torch.where(m, robs.detach().to(device=lam.device, dtype=torch.float64), zero)
        lam = torch.where(m, lam, zero)
        ll = torch.where(m, y * torch.log(lam.clamp_min(RATE_FLOOR)) - lam, zero)
        rows = torch.stack(
            [
                y.sum(0),
                m.sum(0, dtype=torch.float64),
                ll.sum(0),
                lam.sum(0),
                (lam * lam).sum(0),
                (y * y).sum(0),
                (y * lam).sum(0),
            ]
        )  # (7, N)
        if self._sums is None:
            self._sums = rows
        else:
            self._sums += rows.to(self._sums.device)

    def result(self) -> SessionScore:
        """The scores over every bin added so far (no bins: every unit left out)."""
        n = self.num_units
        s = (
            self._sums.cpu().numpy()
            if self._sums is not None
            else np.zeros((7, n), dtype=np.float64)
        )
        sy, sm, ll = s[self._Y], s[self._M], s[self._LL]
        included = sy > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            ybar = np.where(included, sy / np.maximum(sm, 1), 1.0)
            ll0 = sy * np.log(ybar) - sy  # Σ_B (y ln ȳ − ȳ) with Σ_B ȳ = Σ_B y
            gain = np.where(included, ll - ll0, 0.0)
            bps = np.where(included, gain / (_LN2 * np.where(included, sy, 1.0)), np.nan)

            # Pearson r from raw moments over the valid bins.
            cnt = np.maximum(sm, 1)
            mean_l, mean_y = s[self._L] / cnt, sy / cnt
            cov = s[self._YL] / cnt - mean_l * mean_y
            var_l = s[self._LL2] / cnt - mean_l**2
            var_y = s[self._Y2] / cnt - mean_y**2
            ok = (sm >= 2) & (var_l > 1e-12 * np.maximum(mean_l**2, 1e-30)) & (var_y > 0)
            corr = np.where(ok, cov / np.sqrt(np.where(ok, var_l * var_y, 1.0)), np.nan)
        total_spikes = float(sy[included].sum())
        pooled = float(gain.sum() / (_LN2 * total_spikes)) if total_spikes > 0 else float("nan")
        return SessionScore(
            bps_per_unit=bps,
            bps=_nanmean(bps),
            pooled_bps=pooled,
            corr_per_unit=corr,
            corr=_nanmean(corr),
            num_excluded=int((~included).sum()),
            num_spikes=total_spikes,
            num_bins=sm.astype(np.int64),
        )


@dataclass(frozen=True)
class SplitScore:
    """The scores of one split over sessions.

    Attributes:
        bps: mean over the sessions with a valid spike of their BPS (NaN if none has one).
        pooled_bps: Σ (LL − LL0) / (ln 2 · Σ y) over every unit of those sessions.
        corr: mean over those sessions of their correlation where it is defined.
        per_session: session name -> BPS, for the sessions with a valid spike.
        without_spikes: the sessions left out: no valid spike in the evaluated bins.
    """

    bps: float
    pooled_bps: float
    corr: float
    per_session: dict[str, float]
    without_spikes: tuple[str, ...]


def mean_over_sessions(scores: Mapping[str, SessionScore]) -> SplitScore:
    """The study objective's mean over sessions: a session whose evaluated bins hold no valid
    spike (every unit left out, its BPS NaN) is left out and named, not averaged in as NaN."""
    kept = {name: s for name, s in scores.items() if s.num_spikes > 0}
    spikes = sum(s.num_spikes for s in kept.values())
    pooled = sum(s.pooled_bps * s.num_spikes for s in kept.values()) / spikes if kept else math.nan
    corrs = np.array([s.corr for s in kept.values()], dtype=np.float64)
    return SplitScore(
        bps=float(np.mean([s.bps for s in kept.values()])) if kept else math.nan,
        pooled_bps=float(pooled),
        corr=_nanmean(corrs),
        per_session={name: float(s.bps) for name, s in kept.items()},
        without_spikes=tuple(name for name in scores if name not in kept),
    )


def bits_per_spike(
    rates: np.ndarray, counts: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """Bits per spike of each unit (a pure function; the reference for :class:`BPSAccumulator`).

    Args:
        rates: (T, N) predicted rates λ, spikes per bin.
        counts: (T, N) observed counts y.
        mask: (T, N) 1 where a count is valid; None means all valid.

    Returns:
        (N,) float64 bps per unit; NaN for units with no valid spike.
    """
    lam = np.asarray(rates, dtype=np.float64)
    y = np.asarray(counts, dtype=np.float64)
    if lam.shape != y.shape or lam.ndim != 2:
        raise ValueError(f"rates {lam.shape} and counts {y.shape} must both be (T, N)")
    m = np.ones_like(y, dtype=bool) if mask is None else np.asarray(mask) > 0
    if m.shape != y.shape:
        raise ValueError(f"mask {m.shape} must have the shape of counts {y.shape}")
    y = np.where(m, y, 0.0)
    lam = np.where(m, lam, 0.0)
    sy = y.sum(0)
    nb = m.sum(0)
    ll = np.where(m, y * np.log(np.maximum(lam, RATE_FLOOR)) - lam, 0.0).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ybar = sy / np.maximum(nb, 1)
        ll0 = np.where(sy > 0, sy * np.log(np.where(sy > 0, ybar, 1.0)) - sy, 0.0)
        out = np.where(sy > 0, (ll - ll0) / (_LN2 * np.where(sy > 0, sy, 1.0)), np.nan)
    return out
