"""Moved to :mod:`vivit_hpo.bench.search` (a benchmark of the study service).

Kept so that old imports keep working; it only re-exports the new module.
"""

from __future__ import annotations

from vivit_hpo.bench.search import *  # noqa: F403

# The names imported from here before the move, spelled out (the private ones are not in *).
from vivit_hpo.bench.search import (  # noqa: F401
    __all__,
    run_benchmark,
)
