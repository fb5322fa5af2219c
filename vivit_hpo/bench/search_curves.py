"""The search benchmark's arithmetic: best-so-far curves, the cost to reach a target, the table.

Pure functions on plain data, apart from the study service (see
:mod:`vivit_hpo.bench.search`, which runs the studies and reads them back). A study's trials
are put in the order they finished; after each one, the curve records the epochs trained so far
by every finished trial (a pruned trial counts the epochs it ran), the worker-seconds they took,
and the best validation BPS of a complete trial so far (a pruned trial's checkpoints are gone:
it is no model to keep).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Curve",
    "FinishedTrial",
    "SummaryRow",
    "best_so_far",
    "cost_to_reach",
    "rank_agreement",
    "summarize",
]


@dataclass(frozen=True)
class FinishedTrial:
    """One finished trial of a benchmark study."""

    number: int
    state: str  # complete, pruned, infeasible, failed
    epochs: int  # epochs it trained
    seconds: float  # worker-seconds it took (start to end)
    value: float | None  # validation BPS, complete trials only
    finished: float  # when it ended (seconds since the study's first start), for the order


@dataclass(frozen=True)
class Curve:
    """After each finished trial: cumulative epochs and worker-seconds, best value so far
    (None until a trial completes)."""

    epochs: tuple[int, ...]
    seconds: tuple[float, ...]
    best: tuple[float | None, ...]

    @property
    def final(self) -> float | None:
        return self.best[-1] if self.best else None


def best_so_far(trials: Sequence[FinishedTrial]) -> Curve:
    """The curve of a study's finished trials (see the module docstring)."""
    epochs, seconds, best = [], [], []
    e, s, b = 0, 0.0, None
    for t in sorted(trials, key=lambda t: (t.finished, t.number)):
        e += t.epochs
        s += t.seconds
        if t.state == "complete" and t.value is not None and math.isfinite(t.value):
            b = t.value if b is None else max(b, t.value)
        epochs.append(e)
        seconds.append(s)
        best.append(b)
    return Curve(tuple(epochs), tuple(seconds), tuple(best))


def cost_to_reach(
    cost: Sequence[float], best: Sequence[float | None], target: float
) -> float | None:
    """The cost (cumulative epochs or seconds) at which ``best`` first reaches ``target``."""
    for c, b in zip(cost, best, strict=True):
        if b is not None and b >= target:
            return float(c)
    return None


@dataclass(frozen=True)
class SummaryRow:
    """One strategy's figures over its seeds (medians)."""

    strategy: str
    runs: int
    epochs_to_target: float | None  # median over seeds; None if the median run never reached
    seconds_to_target: float | None
    epochs_ratio: float | None  # against the reference strategy's
    seconds_ratio: float | None
    reached: int  # runs that reached the target
    final_best: float | None  # median of the runs' final best validation BPS
    test_bps: float | None  # median of the winners' test BPS
    test_fraction_of_oracle: float | None


def _median(xs: Sequence[float | None]) -> float | None:
    """The median, a run that never reached counting as +inf (None if that is the median)."""
    if not xs:
        return None
    vals = sorted(math.inf if x is None else x for x in xs)
    m = statistics.median(vals)
    return None if math.isinf(m) else float(m)


def summarize(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    reference: str = "random",
    fraction: float = 0.9,
    oracle: float | None = None,
) -> tuple[float | None, list[SummaryRow]]:
    """The benchmark's table.

    Args:
        runs: strategy -> one dict per seed with ``curve`` (a :class:`Curve`) and ``test_bps``
            (the winner's, or None).
        reference: the strategy whose final best sets the target (random search without
            pruning).
        fraction: the target is ``fraction`` x the median of the reference's final bests (that
            median itself where it is not positive).
        oracle: the oracle's test BPS (simulated data), for the winners' fraction of it.

    Returns:
        (the target, one row per strategy in the order of ``runs``).
    """
    finals = [r["curve"].final for r in runs.get(reference, []) if r["curve"].final is not None]
    target = None
    if finals:  # a fraction of a BPS at or below zero would lie above it: then the BPS itself
        final = statistics.median(finals)
        target = fraction * final if final > 0 else final
    rows: list[SummaryRow] = []
    for name, rs in runs.items():
        e = [
            None if target is None else cost_to_reach(r["curve"].epochs, r["curve"].best, target)
            for r in rs
        ]
        s = [
            None if target is None else cost_to_reach(r["curve"].seconds, r["curve"].best, target)
            for r in rs
        ]
        tests = [r["test_bps"] for r in rs if r.get("test_bps") is not None]
        test = statistics.median(tests) if tests else None
        rows.append(
            SummaryRow(
                strategy=name,
                runs=len(rs),
                epochs_to_target=_median(e),
                seconds_to_target=_median(s),
                epochs_ratio=None,
                seconds_ratio=None,
                reached=sum(x is not None for x in e),
                final_best=_median([r["curve"].final for r in rs]),
                test_bps=test,
                test_fraction_of_oracle=test / oracle if test is not None and oracle else None,
            )
        )
    ref = next((r for r in rows if r.strategy == reference), None)

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    return target, [
        SummaryRow(
            **{
                **r.__dict__,
                "epochs_ratio": ratio(r.epochs_to_target, ref.epochs_to_target if ref else None),
                "seconds_ratio": ratio(r.seconds_to_target, ref.seconds_to_target if ref else None),
            }
        )
        for r in rows
    ]


def _ranks(xs: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation: Pearson's of the ranks (None where either side is constant)."""
    try:
        return statistics.correlation(_ranks(xs), _ranks(ys))
    except statistics.StatisticsError:
        return None


def rank_agreement(
    reports: Sequence[Mapping[int, float]], finals: Sequence[float], *, min_trials: int = 4
) -> dict[int, float | None]:
    """How well each epoch's report (the best validation BPS so far) ranks trials as their final
    value does.

    Measured on trials that trained to the end (no pruner chose them), this tells where a
    pruner's first rung can fall: an epoch whose ranking agrees with the final one prunes the
    trials that would have ended worst.

    Args:
        reports: per trial, epoch -> its intermediate value, the best validation BPS so far.
        finals: per trial, its value (the best epoch's validation BPS).
        min_trials: epochs reported by fewer trials are left out.

    Returns:
        epoch -> Spearman's rank correlation between that epoch's report and the final value.
    """
    out: dict[int, float | None] = {}
    epochs = sorted({e for r in reports for e in r})
    for e in epochs:
        pairs = [
            (r[e], f)
            for r, f in zip(reports, finals, strict=True)
            if e in r and math.isfinite(r[e]) and math.isfinite(f)
        ]
        if len(pairs) >= min_trials:
            out[e] = _spearman([a for a, _ in pairs], [b for _, b in pairs])
    return out
