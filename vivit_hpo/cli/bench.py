"""``vivit-hpo bench step|clips``: the training step, and clips against windows (see
vivit_hpo.bench)."""

from __future__ import annotations

from vivit_hpo.bench.command import bench_app
from vivit_hpo.cli import app

group = bench_app()
app.add_typer(group, name="bench")
