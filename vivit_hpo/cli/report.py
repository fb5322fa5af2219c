"""``vivit-hpo dashboard``, ``vivit-hpo report`` and ``vivit-hpo analyze``: seeing a study."""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Annotated

import typer

from vivit_hpo import settings
from vivit_hpo.cli._common import (
    DataPaths,
    Device,
    Force,
    StorageURL,
    check_file_output,
    check_not_an_input,
    console,
    err_console,
)
from vivit_hpo.errors import VivitHpoError

ArtifactDir = Annotated[
    Path | None,
    typer.Option(
        "--artifacts",
        envvar=settings.ARTIFACT_STORE.name,
        help="Artifact store folder the dashboard serves reports from; default "
        "storage/artifacts beside the embedded database.",
        show_default=False,
    ),
]

_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise VivitHpoError(
                    f"port {port} on {host} is in use; pass another with --port"
                ) from e
            raise VivitHpoError(
                f"cannot listen on {host}:{port} ({e.strerror}); check --host"
            ) from e


def dashboard(
    storage: StorageURL = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (localhost only by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8080,
    artifacts: ArtifactDir = None,
) -> None:
    """Serve optuna-dashboard on the study storage (Ctrl-C stops it)."""
    from vivit_hpo.report.build import default_artifact_store_dir, serve_dashboard
    from vivit_hpo.search.storage import mask_url, open_storage, resolve_storage_url

    url = resolve_storage_url(storage)
    opened = open_storage(storage)
    _check_port_free(host, port)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"optuna-dashboard for {mask_url(url)}")
    console.print(f"artifacts from {artifacts or default_artifact_store_dir()}")
    console.print(f"listening on http://{shown}:{port}/dashboard/  (Ctrl-C to stop)")
    if host not in _LOCAL_HOSTS:
        err_console.print(
            f"warning: {host} may be reachable from other machines; the dashboard has no "
            "login and lets anyone who reaches it read and edit the studies"
        )
    serve_dashboard(opened, host, port, artifacts)


def report(
    name: Annotated[str, typer.Argument(help="The study.")],
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.")] = Path(
        "report.html"
    ),
    storage: StorageURL = None,
    compare: Annotated[
        str | None,
        typer.Option("--compare", help="A second study (e.g. CNN baselines) to compare with."),
    ] = None,
    data: Annotated[
        list[Path] | None,
        typer.Option(
            "--data",
            help="Session files for the best trial's attention maps; default the study's own.",
        ),
    ] = None,
    device: Device = "cpu",
    analysis: Annotated[
        bool,
        typer.Option("--analysis/--no-analysis", help="Analyse the best trial's checkpoint."),
    ] = True,
    publish: Annotated[
        bool,
        typer.Option(
            "--dashboard/--no-dashboard",
            help="Also upload the report and its figures to the study for optuna-dashboard.",
        ),
    ] = True,
    artifacts: ArtifactDir = None,
    force: Force = False,
) -> None:
    """Write one self-contained HTML report of a study (plotly inlined, works offline)."""
    from vivit_hpo.report.build import publish_to_dashboard, write_study_report
    from vivit_hpo.search.storage import open_storage, sqlite_path
    from vivit_hpo.training import resolve_device

    inputs = [("storage database", sqlite_path(storage)), *(("--data path", p) for p in data or [])]
    check_not_an_input(out, inputs)
    check_file_output(out, replace=force)
    opened = open_storage(storage)
    result = write_study_report(
        opened,
        name,
        out,
        compare=compare,
        data_paths=data,
        device=str(resolve_device(device)),
        analyze_best=analysis,
    )
    console.print(result.headline)
    console.print(f"wrote {result.path} ({result.path.stat().st_size / 1e6:.1f} MB)")
    if publish:
        artifact_id, graphs = publish_to_dashboard(opened, name, result, artifacts)
        console.print(
            f"dashboard: report uploaded as artifact {artifact_id}, {len(graphs)} figures on "
            "the study page (see `vivit-hpo dashboard`)"
        )


def analyze(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (vivit-hpo train --out).")],
    data: DataPaths,
    out: Annotated[Path, typer.Option("--out", help="Folder for analysis.html and .json.")],
    device: Device = "cpu",
    session: Annotated[
        str | None, typer.Option("--session", help="Session whose samples drive the maps.")
    ] = None,
    samples: Annotated[
        int, typer.Option("--samples", min=1, help="Validation samples to average over.")
    ] = 64,
) -> None:
    """Receptive-field and attention figures of any trained run."""
    from vivit_hpo.report.build import write_run_analysis
    from vivit_hpo.training import resolve_device

    if not run_dir.is_dir():
        raise VivitHpoError(f"{run_dir}: no such run directory; pass the --out of vivit-hpo train")
    html_path, json_path = write_run_analysis(
        run_dir,
        data,
        out,
        device=str(resolve_device(device)),
        session=session,
        num_samples=samples,
    )
    console.print(f"wrote {html_path} and {json_path}")
