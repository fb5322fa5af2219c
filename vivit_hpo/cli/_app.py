"""The ``vivit-hpo`` app: the root command, composed of the command groups' modules.

Each module owns its commands (a ``group`` Typer, or plain functions registered here) and none
imports this one. Every user error is a :class:`~vivit_hpo.errors.VivitHpoError`; the root group
turns it into one line on stderr and exit code 2, in this one place.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from vivit_hpo.cli import bench, data, report, study, train, worker
from vivit_hpo.errors import VivitHpoError

__all__ = ["app", "main"]


class _Group(TyperGroup):
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except VivitHpoError as e:
            # One line, no traceback: the message already says what is wrong and what to do.
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(code=2) from e


app = typer.Typer(
    name="vivit-hpo",
    cls=_Group,
    help="Search ViViT encoding models of visual neurons with Optuna.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.command("dashboard")(report.dashboard)
app.command("report")(report.report)
app.command("analyze")(report.analyze)
app.command("train")(train.train)
app.command("evaluate")(train.evaluate_cmd)
app.command("predict")(train.predict_cmd)
app.command("worker")(worker.worker)
app.command("run")(worker.run)
app.add_typer(bench.group, name="bench")
app.add_typer(data.group, name="data")
app.add_typer(study.group, name="study")


def main() -> None:
    """Entry point of the ``vivit-hpo`` console script."""
    app()
