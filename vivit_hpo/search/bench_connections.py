"""Moved to :mod:`vivit_hpo.bench.connections` (a benchmark of the study service).

Kept so that old imports and ``python -m`` of it keep working; it only re-exports the new module.
"""

from __future__ import annotations

from vivit_hpo.bench.connections import *  # noqa: F403

# The names imported from here before the move, spelled out (the private ones are not in *).
from vivit_hpo.bench.connections import (  # noqa: F401
    __all__,
    main,
    sampling,
)

if __name__ == "__main__":
    raise SystemExit(main())
