"""The search benchmark's arithmetic, by hand."""

from __future__ import annotations

import pytest

from vivit_hpo.bench.search_curves import (
    FinishedTrial,
    best_so_far,
    cost_to_reach,
    rank_agreement,
    summarize,
)


def _t(n: int, state: str, epochs: int, value: float | None, finished: float) -> FinishedTrial:
    return FinishedTrial(n, state, epochs, 10.0 * epochs, value, finished)


def test_best_so_far_orders_by_end_and_counts_pruned_epochs() -> None:
    trials = [
        _t(0, "complete", 4, 0.2, 50),
        _t(1, "pruned", 1, None, 10),  # ended first
        _t(2, "complete", 4, 0.1, 60),
        _t(3, "failed", 2, None, 70),
        _t(4, "complete", 4, 0.4, 80),
    ]
    c = best_so_far(trials)
    assert c.epochs == (1, 5, 9, 11, 15)
    assert c.seconds == (10.0, 50.0, 90.0, 110.0, 150.0)
    assert c.best == (None, 0.2, 0.2, 0.2, 0.4)
    assert c.final == 0.4
    assert cost_to_reach(c.epochs, c.best, 0.15) == 5
    assert cost_to_reach(c.epochs, c.best, 0.3) == 15
    assert cost_to_reach(c.epochs, c.best, 0.5) is None


def test_summary_against_random_search() -> None:
    def run(points: list[tuple[int, float | None]], test: float) -> dict:
        trials = [_t(i, "complete", e, v, i) for i, (e, v) in enumerate(points)]
        return {"curve": best_so_far(trials), "test_bps": test}

    runs = {
        "random": [run([(4, 0.1), (4, 0.5), (4, 1.0)], 0.5), run([(4, 1.0)], 0.7)],
        "default": [run([(1, 0.95), (4, 0.2)], 0.6), run([(2, 0.2), (2, 0.9)], 0.8)],
        "tpe": [run([(4, 0.1)], 0.1), run([(4, 0.2)], 0.2)],
    }
    target, rows = summarize(runs, oracle=1.0)
    assert target == pytest.approx(0.9)  # 0.9 x median(1.0, 1.0)
    by = {r.strategy: r for r in rows}
    assert by["random"].epochs_to_target == 8  # median of 12 and 4
    assert by["default"].epochs_to_target == 2.5  # median of 1 and 4
    assert by["default"].epochs_ratio == pytest.approx(2.5 / 8)
    assert by["default"].seconds_ratio == pytest.approx(25 / 80)
    assert by["tpe"].epochs_to_target is None and by["tpe"].reached == 0
    assert by["default"].test_bps == pytest.approx(0.7)
    assert by["default"].test_fraction_of_oracle == pytest.approx(0.7)
    assert [r.strategy for r in rows] == ["random", "default", "tpe"]


def test_a_reference_at_or_below_zero_bps_is_the_target_itself() -> None:
    trials = [_t(0, "complete", 2, -0.3, 1), _t(1, "complete", 2, -0.1, 2)]
    target, rows = summarize({"random": [{"curve": best_so_far(trials), "test_bps": None}]})
    assert target == pytest.approx(-0.1)  # not 0.9 x -0.1, which random never reached
    assert rows[0].epochs_to_target == 4 and rows[0].epochs_ratio == pytest.approx(1.0)


def test_rank_agreement_of_each_epoch_with_the_final_value() -> None:
    # Epoch 1 ranks the four trials backwards, epoch 2 as they end; epoch 3 has too few trials.
    finals = [0.1, 0.2, 0.3, 0.4]
    reports = [
        {1: 0.4, 2: 0.05},
        {1: 0.3, 2: 0.1},
        {1: 0.2, 2: 0.2, 3: 0.3},
        {1: 0.1, 2: 0.3, 3: 0.4},
    ]
    got = rank_agreement(reports, finals)
    assert got == {1: pytest.approx(-1.0), 2: pytest.approx(1.0)}
    tied = rank_agreement([{1: 0.0}, {1: 0.0}, {1: 1.0}, {1: 2.0}], finals)
    assert tied[1] == pytest.approx(0.9487, abs=1e-4)  # ties share their mean rank
    assert rank_agreement([{1: 0.5}] * 4, finals) == {1: None}  # a constant epoch ranks nothing
