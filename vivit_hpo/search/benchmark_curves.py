"""Moved to :mod:`vivit_hpo.bench.search_curves` (the search benchmark's arithmetic).

Kept so that old imports keep working; it only re-exports the new module.
"""

from __future__ import annotations

from vivit_hpo.bench.search_curves import *  # noqa: F403

# The names imported from here before the move, spelled out (the private ones are not in *).
from vivit_hpo.bench.search_curves import (  # noqa: F401
    FinishedTrial,
    __all__,
    best_so_far,
    cost_to_reach,
    rank_agreement,
    summarize,
)
