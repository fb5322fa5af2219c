"""``vivit-hpo worker`` (pull trials of a study) and ``vivit-hpo run`` (start and watch workers)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from vivit_hpo.cli._common import Device, StorageURL, console
from vivit_hpo.errors import ConfigError
from vivit_hpo.infra import DEFAULT_MAX_INFRA_ERRORS, INFRA_EXIT_CODE, stop_message

MaxInfraErrors = Annotated[
    int,
    typer.Option(
        "--max-infra-errors",
        min=1,
        help="Stop (exit 75) after this many trials in a row fail because of this node "
        "(GPU error, data missing here, full disk); they are re-enqueued, not spent.",
    ),
]


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s worker[{os.getpid()}] %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def worker(
    name: Annotated[str, typer.Argument(help="The study to work on.")],
    storage: StorageURL = None,
    n_trials: Annotated[
        int | None, typer.Option("--n-trials", min=1, help="Stop after this many trials.")
    ] = None,
    device: Device = "auto",
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="CPU threads of this worker (default: $OMP_NUM_THREADS, else every core); "
            "with several CPU workers on one machine give each cores / workers.",
        ),
    ] = None,
    max_infra_errors: MaxInfraErrors = DEFAULT_MAX_INFRA_ERRORS,
    finish_by: Annotated[
        float | None,
        typer.Option(
            "--finish-by",
            help="Unix time: claim no trial after it, and end the running trial with its best "
            "epoch when the next epoch would end after it (`bench models` sets it).",
        ),
    ] = None,
) -> None:
    """Pull trials of study NAME until its budget is spent (run one per GPU, on any machine).

    Exits 0 at the budget, 130 when stopped by a signal, 75 after --max-infra-errors trials in a
    row failed because of this node (one line says what and how to fix it).
    """
    from vivit_hpo.search.worker import run_worker

    _logging()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    summary = run_worker(
        name, storage, n_trials, device, max_infra_errors=max_infra_errors, finish_by=finish_by
    )
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(summary.states.items())) or "none"
    logging.getLogger("vivit_hpo").info(
        "worker done (%s): %d trial(s): %s", summary.stopped_by, summary.trials, states
    )
    if summary.stopped_by == "signal":
        raise typer.Exit(130)
    if summary.stopped_by == "infrastructure":
        typer.echo(f"error: {stop_message(summary.infra_reason, summary.infra_errors)}", err=True)
        raise typer.Exit(INFRA_EXIT_CODE)


def _gpus(raw: str | None) -> list[int] | None:
    if raw is None:
        return None
    try:
        out = [int(x) for x in raw.split(",") if x.strip()]
    except ValueError as e:
        raise ConfigError(f"--gpus {raw!r}: expected GPU indices, e.g. --gpus 0,1") from e
    if not out or min(out) < 0:
        raise ConfigError(f"--gpus {raw!r}: expected GPU indices, e.g. --gpus 0,1")
    return out


def run(
    name: Annotated[str, typer.Argument(help="The study (created from --spec if new).")],
    spec: Annotated[
        Path | None, typer.Option("--spec", help="Study spec YAML (see studies/).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Number of workers (CPU by default).")
    ] = None,
    gpus: Annotated[
        str | None, typer.Option("--gpus", help="One worker per GPU index, e.g. 0,1.")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="Device of --workers workers (default cpu).")
    ] = None,
    storage: StorageURL = None,
    no_baseline: Annotated[
        bool,
        typer.Option(
            "--no-baseline", help="Creating the study: do not enqueue the base config first."
        ),
    ] = False,
    max_infra_errors: MaxInfraErrors = DEFAULT_MAX_INFRA_ERRORS,
) -> None:
    """Create or load a study, start its workers here and watch them until the budget is spent.

    Ctrl-C stops the workers; their running trials resume on the next run. A worker that
    stopped on infrastructure errors (exit 75) is not restarted; with none left before the
    budget is spent, run exits 75 with the reason.
    """
    from vivit_hpo._live import LiveView
    from vivit_hpo.search.coordinator import run_study, worker_devices

    if workers is not None and gpus is not None:
        raise ConfigError("give --workers N or --gpus 0,1, not both")
    devices = worker_devices(workers, _gpus(gpus), device)
    with LiveView(console) as view:
        result = run_study(
            name,
            spec,
            storage,
            devices=devices,
            progress=view,
            baseline=not no_baseline,
            max_infra_errors=max_infra_errors,
        )
    if result.exit_code:
        raise typer.Exit(result.exit_code)
