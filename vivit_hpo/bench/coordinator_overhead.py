"""The coordinator's own overhead per trial: ask, reports, tell, with many concurrent workers.

    python -m vivit_hpo.bench.coordinator_overhead --storage postgresql://... --workers 8 \\
        --trials 2000 --epochs 8

Each of ``--workers`` processes runs the workers' exact storage pattern with a synthetic
objective instead of training: claim a trial (claim lock, stale-trial check, budget count,
``study.ask``, first heartbeat), sample the default (roadmap) space with the default sampler (TPE,
multivariate, constant liar), then per epoch ``trial.report`` + ``should_prune`` with the default
pruner (Hyperband, epochs as resource), then ``study.tell``, with the heartbeat thread running.
It prints the mean, p50 and p95 of each phase and how they grow with the study's size, so the
figures can be set against a training epoch (seconds to minutes). The study is deleted at the
end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import random
import statistics
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

from vivit_hpo import settings

__all__ = ["bench_worker", "main", "summarize"]


def _synthetic_bps(values: dict[str, Any], epoch: int, rng: random.Random) -> float:
    """A made-up learning curve: better near lr 1e-3, D 384, patch 4, rising with epochs."""
    score = 0.5
    score -= 0.1 * abs(math.log10(values["lr"]) + 3.0)
    score -= 0.05 * abs(math.log2(values["embed_dim"] / 384))
    score -= 0.05 * abs(math.log2(values["patch"] / 4))
    return score * (1.0 - math.exp(-epoch / 3.0)) + rng.gauss(0.0, 0.01)


def bench_worker(
    study_name: str, storage_url: str, spec_text: str, out: str, seed: int, budget: int
) -> None:
    """One worker process: run trials with the synthetic objective, log timings as JSON lines.

    Each line: ``{"number", "seen", "claim", "sample", "reports": [...], "tell", "state"}``
    (seconds; ``seen`` = trials in the study when the claim began).
    """
    warnings.filterwarnings("ignore")
    import optuna
    from optuna.trial import TrialState

    from vivit_hpo.config import RunConfig
    from vivit_hpo.search.factory import build_pruner, build_sampler
    from vivit_hpo.search.outcome import record_attrs
    from vivit_hpo.search.record import FEASIBLE
    from vivit_hpo.search.space import suggest
    from vivit_hpo.search.spec import spec_from_text
    from vivit_hpo.search.storage import Heartbeat, StaleCheck, open_storage, retrying
    from vivit_hpo.search.study import load_study
    from vivit_hpo.search.worker import claim_trial

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    spec = spec_from_text(spec_text)
    hb = spec.heartbeat
    storage = open_storage(
        storage_url,
        heartbeat_interval=hb.interval_s,
        grace_period=hb.grace_s,
        max_retry=hb.max_retry,
    )
    study = load_study(storage, study_name, sampler=build_sampler(spec), pruner=build_pruner(spec))
    stale = StaleCheck(storage)
    rng = random.Random(seed)
    run_config = RunConfig().to_dict()
    first = True
    with open(out, "a") as f:
        while True:
            seen = len(study.get_trials(deepcopy=False))
            t1 = time.perf_counter()
            got = retrying(lambda: claim_trial(study, storage, budget, stale=stale), what="claim")
            t2 = time.perf_counter()
            if got == "done":
                break
            if got == "wait":
                time.sleep(0.05)
                continue
            assert isinstance(got, optuna.Trial)
            trial = got
            if first:
                study.sampler = build_sampler(spec, first_trial=trial.number)
                first = False
            with Heartbeat(storage, trial._trial_id, hb.interval_s):
                values = suggest(trial, spec.space)
                t3 = time.perf_counter()
                # The same attribute writes as a real trial's, at its start and end.
                start_attrs: dict[str, Any] = {"host": "bench", "device": "cpu", "pid": 1}
                start_attrs |= {"values": values, "run_config": run_config, "trial_dir": out}
                start_attrs |= {"params_count": 1, "flops_per_sample": 1.0}
                record_attrs(trial, start_attrs)
                trial.set_constraint(FEASIBLE, 0.0)
                t3b = time.perf_counter()
                reports = []
                state = TrialState.COMPLETE
                value = 0.0
                for epoch in range(1, spec.epochs + 1):
                    value = _synthetic_bps(values, epoch, rng)
                    r0 = time.perf_counter()
                    trial.report(value, epoch)
                    pruned = trial.should_prune()
                    reports.append(time.perf_counter() - r0)
                    if pruned:
                        state = TrialState.PRUNED
                        break
                t4 = time.perf_counter()
                end_attrs: dict[str, Any] = {"samples_per_s": 1.0, "peak_memory_mb": 1.0}
                end_attrs |= {"epochs_run": len(reports), "best_epoch": len(reports)}
                end_attrs |= {"val_bps_per_session": {"s0": value}, "stopped_early": False}
                record_attrs(trial, end_attrs)
                t4b = time.perf_counter()
                study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
                t5 = time.perf_counter()
            f.write(
                json.dumps(
                    {
                        "number": trial.number,
                        "seen": seen,
                        "claim": t2 - t1,
                        "sample": t3 - t2,
                        "start_attrs": t3b - t3,
                        "reports": reports,
                        "end_attrs": t4b - t4,
                        "tell": t5 - t4b,
                        "state": state.name,
                    }
                )
                + "\n"
            )
            f.flush()
    storage.engine.dispose()


def _stats(xs: list[float]) -> tuple[float, float, float]:
    if not xs:
        return (math.nan, math.nan, math.nan)
    s = sorted(xs)
    p95 = s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]
    return statistics.fmean(s), statistics.median(s), p95


def summarize(rows: list[dict[str, Any]], buckets: int = 4) -> dict[str, Any]:
    """Per-phase (mean, p50, p95) in ms overall and per study-size bucket (pure)."""
    phases = {
        "ask (claim + sample)": [r["claim"] + r["sample"] for r in rows],
        "  claim (lock, stale check, count, ask)": [r["claim"] for r in rows],
        "  sample (TPE over the space)": [r["sample"] for r in rows],
        "report (report + should_prune), per epoch": [x for r in rows for x in r["reports"]],
        "tell": [r["tell"] for r in rows],
        "user attrs + constraint (start and end)": [
            r["start_attrs"] + r["end_attrs"] for r in rows
        ],
        "total per trial": [
            r["claim"]
            + r["sample"]
            + r["start_attrs"]
            + sum(r["reports"])
            + r["end_attrs"]
            + r["tell"]
            for r in rows
        ],
    }
    overall = {k: tuple(1e3 * v for v in _stats(xs)) for k, xs in phases.items()}
    n = max((r["number"] for r in rows), default=0) + 1
    size = max(1, math.ceil(n / buckets))
    growth = []
    for b in range(buckets):
        sel = [r for r in rows if b * size <= r["number"] < (b + 1) * size]
        if not sel:
            continue
        growth.append(
            {
                "trials": f"{b * size}-{min(n, (b + 1) * size) - 1}",
                "ask": 1e3 * statistics.fmean(r["claim"] + r["sample"] for r in sel),
                "report": 1e3 * statistics.fmean(x for r in sel for x in r["reports"]),
                "tell": 1e3 * statistics.fmean(r["tell"] for r in sel),
            }
        )
    return {"overall": overall, "growth": growth}


def _spec_text(trials: int, epochs: int, heartbeat_s: int) -> str:
    from vivit_hpo.search.spec import parse_spec, spec_to_text

    spec = parse_spec(
        {
            "description": "coordinator overhead benchmark (synthetic objective)",
            "data": {"synth": {}},
            "epochs": epochs,
            "budget": {"n_trials": trials},
            "heartbeat": {"interval_s": heartbeat_s, "grace_s": 10 * heartbeat_s},
        },
        check=False,
    )
    return spec_to_text(spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", default=os.environ.get(settings.STORAGE.name))
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--heartbeat", type=int, default=20, help="heartbeat interval, s")
    parser.add_argument("--keep", action="store_true", help="keep the study")
    args = parser.parse_args(argv)

    import optuna
    from rich.console import Console
    from rich.table import Table

    from vivit_hpo.search.storage import mask_url, open_storage, resolve_storage_url

    url = resolve_storage_url(args.storage)
    storage = open_storage(url)
    name = f"bench-overhead-{uuid.uuid4().hex[:8]}"
    spec_text = _spec_text(args.trials, args.epochs, args.heartbeat)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.set_user_attr("spec", spec_text)
    study.set_user_attr("n_trials", args.trials)
    console = Console()
    console.print(
        f"{args.workers} workers x study {name} on {mask_url(url)}: {args.trials} trials, "
        f"up to {args.epochs} reports each, TPE + Hyperband over the roadmap space"
    )
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        outs = [str(Path(tmp) / f"w{i}.jsonl") for i in range(args.workers)]
        start = time.perf_counter()
        procs = [
            ctx.Process(target=bench_worker, args=(name, url, spec_text, outs[i], i, args.trials))
            for i in range(args.workers)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        wall = time.perf_counter() - start
        rows = [
            json.loads(line)
            for o in outs
            if Path(o).exists()
            for line in Path(o).read_text().splitlines()
        ]
    failed = [p.exitcode for p in procs if p.exitcode]
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    s = summarize(rows)
    table = Table(
        title=f"coordinator overhead per trial, ms ({len(rows)} trials, {args.workers} workers)"
    )
    for col in ("phase", "mean", "p50", "p95"):
        table.add_column(col, justify="left" if col == "phase" else "right")
    for k, (mean, p50, p95) in s["overall"].items():
        table.add_row(k, f"{mean:.1f}", f"{p50:.1f}", f"{p95:.1f}")
    console.print(table)
    growth = Table(title="growth with the study's size (mean ms)")
    for col in ("trial numbers", "ask", "report", "tell"):
        growth.add_column(col, justify="right")
    for g in s["growth"]:
        growth.add_row(g["trials"], f"{g['ask']:.1f}", f"{g['report']:.1f}", f"{g['tell']:.1f}")
    console.print(growth)
    console.print(
        f"wall {wall:.0f} s, {len(rows) / wall:.1f} trials/s overall; states: {states}"
        + (f"; worker exit codes {failed}" if failed else "")
    )
    if not args.keep:
        optuna.delete_study(study_name=name, storage=storage)
    return 1 if failed or len(rows) < args.trials else 0


if __name__ == "__main__":
    raise SystemExit(main())
