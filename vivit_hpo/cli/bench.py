"""``vivit-hpo bench``: time the full training step of a model config (see vivit_hpo.bench)."""

from __future__ import annotations

from vivit_hpo.bench.command import bench
from vivit_hpo.cli import app

app.command("bench")(bench)
