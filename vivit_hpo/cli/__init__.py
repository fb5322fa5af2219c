"""The ``vivit-hpo`` command line.

Each command group lives in its own module and stays thin: it parses options and calls the
library. Every user error is a :class:`~vivit_hpo.errors.VivitHpoError`; the top-level group
turns it into one line on stderr and exit code 2, in this one place.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

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

# Command groups register themselves on `app` when imported (one import line each).
from vivit_hpo.cli import bench as _bench  # noqa: E402,F401
from vivit_hpo.cli import data as _data  # noqa: E402,F401
from vivit_hpo.cli import report as _report  # noqa: E402,F401
from vivit_hpo.cli import study as _study  # noqa: E402,F401
from vivit_hpo.cli import train as _train  # noqa: E402,F401
from vivit_hpo.cli import worker as _worker  # noqa: E402,F401


def main() -> None:
    """Entry point of the ``vivit-hpo`` console script."""
    app()
