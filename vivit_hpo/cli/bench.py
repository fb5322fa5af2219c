"""``vivit-hpo bench step|clips|search|models|chaos``: the training step, clips against windows
(see vivit_hpo.bench), search strategies against random search (vivit_hpo.bench.search), the
searched ViViT against the yardsticks (vivit_hpo.bench.models), and the chaos soak
(vivit_hpo.bench.chaos)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vivit_hpo._output import Column, FitTable, count
from vivit_hpo.bench.command import bench_app
from vivit_hpo.cli._common import StorageURL, console

if TYPE_CHECKING:
    from vivit_hpo.bench.chaos import SoakResult

group = bench_app()


@group.command("search")
def search(
    spec: Annotated[Path, typer.Option("--spec", help="Study spec YAML (see studies/).")],
    strategies: Annotated[
        str,
        typer.Option(
            "--strategies",
            help="Comma-separated: default (the spec's own sampler and pruner), random (no "
            "pruning: the reference), tpe (no pruning), random-hyperband.",
        ),
    ] = "default,random,tpe,random-hyperband",
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Studies per strategy.")] = 3,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Workers per study.")] = 2,
    trials: Annotated[
        int | None,
        typer.Option(
            "--trials", min=1, help="Trials per study (default: the spec's budget.n_trials)."
        ),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="Device of every worker.")] = "cpu",
    storage: StorageURL = None,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for search_bench.json, .html, data, trials.")
    ] = Path("search-bench"),
) -> None:
    """Run the spec's search with each strategy and seed, to the spec's budget (or --trials);
    compare the epochs and worker-seconds each needs to reach 90% of random search's best, and
    the winners' test BPS (against the oracle on simulated data)."""
    from vivit_hpo.bench.search import run_benchmark
    from vivit_hpo.search.spec import load_spec

    parsed = load_spec(spec)
    if trials is not None:
        parsed = parsed.model_copy(
            update={"budget": parsed.budget.model_copy(update={"n_trials": trials})}
        )
    names = [s.strip() for s in strategies.split(",") if s.strip()]
    run_benchmark(
        parsed,
        strategies=names,
        seeds=seeds,
        workers=workers,
        storage_url=storage,
        out=out,
        console=console,
        device=device,
    )
    console.print(f"wrote {out / 'search_bench.json'} and {out / 'search_bench.html'}")


@group.command("chaos")
def chaos(
    minutes: Annotated[
        float, typer.Option("--minutes", min=0, help="Keep starting chaos studies this long.")
    ] = 5.0,
    workers: Annotated[int, typer.Option("--workers", min=1, help="CPU workers of `run`.")] = 4,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the schedules and the kills.")] = 0,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for chaos.json, the data and every study.")
    ] = Path("chaos-bench"),
) -> None:
    """Soak: studies of tiny models run by `vivit-hpo run` on a private PostgreSQL while workers
    are SIGKILLed, `run` is SIGTERMed and started again, the database stops (once longer than
    the heartbeat grace period, once briefly, once past the give-up time per study), a worker
    hangs, a node fails every trial, a last.pt is torn and a same-named study in another
    storage shares the artifacts root; exit 1 when a check fails."""
    from vivit_hpo.bench.chaos import ChaosResult, run_soak

    def line(r: ChaosResult) -> None:
        failed = [c.name for c in r.checks if not c.ok]
        console.print(
            f"{r.study}: {r.seconds:.0f} s, {r.kills} kills, {r.run_restarts} restarts, "
            f"{len(r.outages)} outages, {len(r.nodes)} faulty nodes, {len(r.torn)} torn, "
            f"{r.lost} lost, " + (f"FAILED {', '.join(failed)}" if failed else "all checks pass")
        )

    soak = run_soak(out, minutes=minutes, workers=workers, seed=seed, on_round=line)
    console.print(soak_table(soak))
    for r in soak.rounds:
        for c in r.checks:
            if not c.ok:
                console.print(f"{r.study} {c.name}: {c.detail}")
    console.print(f"wrote {out / 'chaos.json'}")
    if not soak.ok:
        raise typer.Exit(1)


def soak_table(soak: SoakResult) -> FitTable:
    """The soak's totals in one row, and which checks failed in how many studies."""
    totals = soak.to_dict()
    t = FitTable(
        [
            Column("studies", "right", priority=5),
            Column("kills", "right", priority=3),
            Column("run restarts", "right", priority=2, wrap=True),
            Column("outages survived", "right", priority=4, wrap=True),
            Column("other faults", "right", priority=4, wrap=True),
            Column("trials", "right", priority=1),
            Column("trials lost", "right", priority=6),
            Column("checkpoints deleted", "right", priority=6, wrap=True),
            Column("checks", priority=7, wrap=True),
        ],
        title="chaos soak",
        title_justify="left",
    )
    t.add_row(
        count(len(soak.rounds)),
        count(totals["kills"]),
        f"{totals['run_restarts']} (+{totals['run_relaunches']} relaunched)",
        f"{totals['outages_long']} long, {totals['outages_brief']} brief, "
        f"{totals['outages_give_up']} past give-up",
        f"{totals['hung_workers']} hung, {totals['bad_nodes']} bad nodes, "
        f"{totals['torn_checkpoints']} torn last.pt, {totals['twins']} twins",
        count(totals["trials"]),
        count(totals["trials_lost"]),
        count(totals["checkpoints_deleted"]),
        ", ".join(f"{k} failed x{v}" for k, v in soak.failed_checks.items()) or "all pass",
    )
    return t


@group.command("models")
def models(
    spec: Annotated[
        Path, typer.Option("--spec", help="Study spec YAML with `baselines` (the yardsticks).")
    ],
    minutes: Annotated[
        float, typer.Option("--minutes", min=0.01, help="Wall time of the search and of each.")
    ],
    workers: Annotated[int, typer.Option("--workers", min=1, help="Workers of the search.")] = 2,
    device: Annotated[str, typer.Option("--device", help="Device of every worker.")] = "cpu",
    storage: StorageURL = None,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for bench_models.json, data, trials.")
    ] = Path("models-bench"),
) -> None:
    """The spec's ViViT search for M minutes (N workers), then each yardstick of its
    `baselines` trained alone for M minutes on the same cores; test BPS of the best ViViT and
    of each, against the oracle on simulated data."""
    from vivit_hpo.bench.models import run_models_bench
    from vivit_hpo.search.spec import load_spec

    run_models_bench(
        load_spec(spec),
        minutes=minutes,
        workers=workers,
        out=out,
        console=console,
        device=device,
        storage_url=storage,
    )
    console.print(f"wrote {out / 'bench_models.json'}")
