"""``vivit-hpo bench step|clips|search``: the training step, clips against windows (see
vivit_hpo.bench), and search strategies against random search (vivit_hpo.search.benchmark)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vivit_hpo.bench.command import bench_app
from vivit_hpo.cli import app
from vivit_hpo.cli._common import StorageURL, console

group = bench_app()
app.add_typer(group, name="bench")


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
    device: Annotated[str, typer.Option("--device", help="Device of every worker.")] = "cpu",
    storage: StorageURL = None,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for search_bench.json, .html, data, trials.")
    ] = Path("search-bench"),
) -> None:
    """Run the spec's search with each strategy and seed, to the spec's budget; compare the
    epochs and worker-seconds each needs to reach 90% of random search's best, and the winners'
    test BPS (against the oracle on simulated data)."""
    from vivit_hpo.search.benchmark import run_benchmark
    from vivit_hpo.search.spec import load_spec

    parsed = load_spec(spec)
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
