"""``python -m vivit_hpo.bench``: the bench command without the rest of the CLI.

For machines that have torch but not the search stack (Optuna, SQLAlchemy, ...): a bare GPU
machine, say. A user error prints ``error: <message>`` and exits 2, as ``vivit-hpo`` does.
"""

from __future__ import annotations

import sys

import typer

from vivit_hpo.bench.command import bench
from vivit_hpo.errors import VivitHpoError


def main() -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(bench)
    try:
        app()
    except VivitHpoError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
