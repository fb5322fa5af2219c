"""``vivit-hpo bench search``: what a search strategy buys, measured on one spec.

For each strategy and seed, a study is made from the spec with only its sampler and pruner
replaced, and run to the spec's budget by N local workers (:func:`run_study`, the same
coordinator a user runs):

- ``default``: the spec's own sampler and pruner (the sampler's seed shifted per seed), and its
  baseline trial (the base config first) when the spec has one: the search as the product runs
  it;
- ``random``: random search without pruning (the reference);
- ``tpe``: TPE (the spec's TPE options, if it uses TPE) without pruning;
- ``random-hyperband``: random search with Hyperband (the spec's Hyperband options, if any).

The last three are the textbook strategies: no baseline trial, so that they measure what the
sampler and pruner find on their own (the JSON says whether each winner was the baseline).

Simulated data are written once, into ``OUT/data-<hash of the recipe>``, and every study reads
them as ``data.paths`` (a spec with ``data.paths`` is used as it is). Each study's finished
trials are read back into best-so-far curves (:mod:`vivit_hpo.bench.search_curves`), written
to ``OUT/search_bench.json`` and drawn in ``OUT/search_bench.html``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState
from rich import box
from rich.console import Console
from rich.table import Table

from vivit_hpo.bench.search_curves import (
    Curve,
    FinishedTrial,
    SummaryRow,
    best_so_far,
    rank_agreement,
    summarize,
)
from vivit_hpo.errors import SpecError
from vivit_hpo.search.record import TrialRecord
from vivit_hpo.search.spec import DataSpec, PrunerSpec, SamplerSpec, StudySpec, spec_to_text
from vivit_hpo.search.study import materialise_synth, retried_numbers

__all__ = ["STRATEGIES", "StrategyRun", "finished_trials", "run_benchmark", "strategy_spec"]

STRATEGIES = ("default", "random", "tpe", "random-hyperband")
REFERENCE = "random"


def strategy_spec(spec: StudySpec, strategy: str, seed: int) -> StudySpec:
    """``spec`` with the sampler and pruner of ``strategy``, seeded with ``seed``."""
    if strategy == "default":
        sampler = spec.sampler.model_copy(update={"seed": (spec.sampler.seed or 0) + seed})
        pruner = spec.pruner
    elif strategy == "random":
        sampler, pruner = SamplerSpec(name="random", seed=seed), PrunerSpec(name="none")
    elif strategy == "tpe":
        options = spec.sampler.options if spec.sampler.name == "tpe" else {}
        sampler = SamplerSpec(name="tpe", seed=seed, options=options)
        pruner = PrunerSpec(name="none")
    elif strategy == "random-hyperband":
        sampler = SamplerSpec(name="random", seed=seed)
        pruner = spec.pruner if spec.pruner.name == "hyperband" else PrunerSpec(name="hyperband")
    else:
        raise SpecError(f"strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    baseline = spec.baseline and strategy == "default"
    return spec.model_copy(update={"sampler": sampler, "pruner": pruner, "baseline": baseline})


def finished_trials(trials: Sequence[FrozenTrial]) -> list[FinishedTrial]:
    """A study's finished trials for the curves. A failure that was retried is left out: its
    retry inherits its reports and resumes from its checkpoint, so its epochs count once."""
    retried = retried_numbers(trials)
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    if not starts:
        return []
    first = min(starts)
    out = []
    for t in trials:
        if not t.state.is_finished() or t.datetime_complete is None:
            continue
        if t.state == TrialState.FAIL and t.number in retried:
            continue
        start = t.datetime_start or t.datetime_complete
        r = TrialRecord.of(t)
        out.append(
            FinishedTrial(
                number=r.number,
                state=r.status,
                epochs=r.epochs,
                seconds=(t.datetime_complete - start).total_seconds(),
                value=r.value,
                finished=(t.datetime_complete - first).total_seconds(),
            )
        )
    return out


@dataclass(frozen=True)
class StrategyRun:
    """One study of the benchmark, read back."""

    strategy: str
    seed: int
    study: str
    states: dict[str, int]
    epochs: int
    worker_seconds: float
    wall_seconds: float
    curve: Curve
    winner: dict[str, Any] | None  # number, params, val_bps, test_bps
    # Per complete trial: (epoch -> validation BPS, its value), for rank_agreement.
    reports: tuple[tuple[dict[int, float], float], ...]

    @property
    def test_bps(self) -> float | None:
        return None if self.winner is None else self.winner.get("test_bps")


def _read_run(strategy: str, seed: int, name: str, trials: Sequence[FrozenTrial]) -> StrategyRun:
    done = finished_trials(trials)
    curve = best_so_far(done)
    states: dict[str, int] = {}
    for t in done:
        states[t.state] = states.get(t.state, 0) + 1
    records = [TrialRecord.of(t) for t in trials]
    complete = [
        r
        for r in records
        if r.status == "complete" and r.value is not None and math.isfinite(r.value)
    ]
    completed = {r.number for r in complete}
    winner = None
    if complete:
        w = max(complete, key=lambda r: (r.value, -r.number))
        winner = {
            "number": w.number,
            "params": w.params,
            "val_bps": w.value,
            "test_bps": w.test_bps,
            "baseline": w.baseline,
        }
    return StrategyRun(
        strategy=strategy,
        seed=seed,
        study=name,
        states=states,
        epochs=curve.epochs[-1] if curve.epochs else 0,
        worker_seconds=curve.seconds[-1] if curve.seconds else 0.0,
        wall_seconds=max((t.finished for t in done), default=0.0),
        curve=curve,
        winner=winner,
        reports=tuple(
            (dict(t.intermediate_values), float(t.value))
            for t in trials
            if t.number in completed and t.value is not None
        ),
    )


def run_benchmark(
    spec: StudySpec,
    *,
    strategies: Sequence[str],
    seeds: int,
    workers: int,
    storage_url: str | None,
    out: Path,
    console: Console,
    device: str = "cpu",
) -> dict[str, Any]:
    """Run every strategy x seed study and write ``search_bench.json`` and ``.html`` to ``out``.

    Returns:
        The JSON document.
    """
    from vivit_hpo._live import LiveView
    from vivit_hpo.data.simulate import oracle_split_mean
    from vivit_hpo.search.coordinator import run_study
    from vivit_hpo.search.storage import open_storage

    for s in strategies:
        strategy_spec(spec, s, 0)  # unknown names fail before anything runs
    out.mkdir(parents=True, exist_ok=True)
    url = storage_url or f"sqlite:///{(out / 'bench.db').resolve()}"
    data_dir = None
    if spec.data.synth is not None:
        data_dir = materialise_synth(spec, out / spec.synth_folder())
        spec = spec.model_copy(update={"data": DataSpec(paths=[str(data_dir.resolve())])})
    spec = spec.model_copy(
        update={"artifacts": spec.artifacts.model_copy(update={"dir": str(out / "artifacts")})}
    )
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    runs: dict[str, list[StrategyRun]] = {s: [] for s in strategies}
    for seed in range(seeds):
        for strategy in strategies:
            name = f"bench-{stamp}-{strategy}-s{seed}"
            path = out / "specs" / f"{name}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(spec_to_text(strategy_spec(spec, strategy, seed)))
            console.print(f"[bold]{strategy}[/bold], seed {seed}: study {name}")
            with LiveView(console) as view:
                result = run_study(name, path, url, devices=[device] * workers, progress=view)
            if result.exit_code not in (0, 3):  # 3: the spec's time limit, a result like any
                raise SpecError(f"study {name} ended with exit code {result.exit_code}")
            storage = open_storage(url)
            try:
                sid = storage.get_study_id_from_name(name)
                trials = storage.get_all_trials(sid, deepcopy=False)
            finally:
                storage.engine.dispose()
            runs[strategy].append(_read_run(strategy, seed, name, trials))

    oracle = None if data_dir is None else oracle_split_mean([data_dir])
    ref = REFERENCE if REFERENCE in runs else strategies[0]
    target, rows = summarize(
        {k: [{"curve": r.curve, "test_bps": r.test_bps} for r in v] for k, v in runs.items()},
        reference=ref,
        oracle=oracle,
    )
    # Where a first rung can fall: how each epoch ranks the trials no pruner stopped.
    unpruned = [s for s in strategies if strategy_spec(spec, s, 0).pruner.name == "none"]
    pairs = [p for s in unpruned for r in runs[s] for p in r.reports]
    agreement = rank_agreement([p[0] for p in pairs], [p[1] for p in pairs])
    doc = {
        "spec": spec.description,
        "budget": spec.budget.model_dump(),
        "epochs_per_trial": spec.epochs,
        "workers": workers,
        "device": device,
        "seeds": seeds,
        "storage": url.split("@")[-1],
        "reference": ref,
        "target_val_bps": target,
        "oracle_test_bps": oracle,
        "summary": [asdict(r) for r in rows],
        "rank_agreement": {
            "strategies": unpruned,
            "trials": len(pairs),
            "spearman_by_epoch": agreement,
        },
        "runs": {k: [{**asdict(r), "curve": asdict(r.curve)} for r in v] for k, v in runs.items()},
    }
    (out / "search_bench.json").write_text(json.dumps(doc, indent=1))
    (out / "search_bench.html").write_text(_html(runs, target, oracle))
    console.print(summary_table(rows, target, ref))
    if agreement:
        shown = ", ".join(
            f"{e}: {'-' if c is None else format(c, '.2f')}" for e, c in agreement.items()
        )
        console.print(
            f"rank agreement of each epoch's val BPS with the final value ({len(pairs)} complete "
            f"trials of {', '.join(unpruned)}; Spearman): {shown}"
        )
    return doc


def summary_table(rows: Sequence[SummaryRow], target: float | None, reference: str) -> Table:
    """The printed table: cost to reach the target against the reference, and the winners."""
    goal = "-" if target is None else f"{target:+.4f}"
    # Short two-line headers and simple rules: the table fits an 80-column terminal.
    table = Table(
        title=f"search benchmark: cost to reach val BPS {goal} (90% of {reference})",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for col in (
        "strategy",
        "reached",
        "best\nval",
        "epochs",
        "x ref",
        "worker\nsec",
        "x ref",
        "winner\ntest",
        "of\noracle",
    ):
        table.add_column(
            col,
            justify="left" if col == "strategy" else "right",
            min_width=max(len(line) for line in col.split("\n")),
            no_wrap=True,
        )

    def f(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    for r in rows:
        table.add_row(
            r.strategy,
            f"{r.reached}/{r.runs}",
            f(r.final_best, "+.3f"),
            f(r.epochs_to_target, ".0f"),
            f(r.epochs_ratio, ".2f"),
            f(r.seconds_to_target, ".0f"),
            f(r.seconds_ratio, ".2f"),
            f(r.test_bps, "+.3f"),
            f(r.test_fraction_of_oracle, ".0%"),
        )
    return table


def _step_at(cost: Sequence[float], best: Sequence[float | None], x: float) -> float | None:
    value = None
    for c, b in zip(cost, best, strict=True):
        if c > x:
            break
        value = b
    return value


def _html(runs: dict[str, list[StrategyRun]], target: float | None, oracle: float | None) -> str:
    """One plotly page: best-so-far validation BPS against cumulative epochs and worker-seconds,
    per strategy the median over seeds with the band from the lowest to the highest seed."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("against epochs trained", "against worker-seconds"),
        shared_yaxes=True,
    )
    for col, axis in ((1, "epochs"), (2, "seconds")):
        top = max(
            (getattr(r.curve, axis)[-1] for v in runs.values() for r in v if r.curve.best),
            default=1.0,
        )
        grid = [top * i / 100 for i in range(101)]
        for k, (name, rs) in enumerate(runs.items()):
            color = qualitative.Plotly[k % len(qualitative.Plotly)]
            at = [[_step_at(getattr(r.curve, axis), r.curve.best, x) for r in rs] for x in grid]
            xs = [x for x, vals in zip(grid, at, strict=True) if all(v is not None for v in vals)]
            full = [[v for v in vals if v is not None] for vals in at if None not in vals]
            if not xs:
                continue
            lo, hi = [min(v) for v in full], [max(v) for v in full]
            med = [statistics.median(v) for v in full]
            fig.add_trace(
                go.Scatter(
                    x=xs + xs[::-1],
                    y=hi + lo[::-1],
                    fill="toself",
                    line={"width": 0},
                    fillcolor=color,
                    opacity=0.2,
                    showlegend=False,
                    hoverinfo="skip",
                    legendgroup=name,
                ),
                row=1,
                col=col,
            )
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=med,
                    mode="lines",
                    line={"color": color, "shape": "hv"},
                    name=f"{name} (median of {len(rs)})",
                    legendgroup=name,
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
        for value, label in ((target, "target"), (oracle, "oracle (test)")):
            if value is not None:
                fig.add_hline(y=value, line_dash="dot", annotation_text=label, row=1, col=col)
    fig.update_yaxes(title_text="best validation BPS so far", row=1, col=1)
    fig.update_layout(title="vivit-hpo search benchmark", template="plotly_white", height=520)
    return fig.to_html(include_plotlyjs=True, full_html=True)
