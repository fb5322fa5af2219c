"""``python -m vivit_hpo.bench step|clips``: the bench commands without the rest of the CLI.

For machines that have torch but not the search stack (Optuna, SQLAlchemy, ...): a bare GPU
machine, say. A user error prints ``error: <message>`` and exits 2, as ``vivit-hpo`` does.
"""

from __future__ import annotations

import sys

from vivit_hpo.bench.command import bench_app
from vivit_hpo.errors import VivitHpoError


def main() -> None:
    app = bench_app()
    try:
        app()
    except VivitHpoError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
