"""Moved to :mod:`vivit_hpo.testing.tiny` (a test fixture).

Kept so that old imports keep working; it only re-exports the new module.
"""

from __future__ import annotations

from vivit_hpo.testing.tiny import *  # noqa: F403

# The names imported from here before the move, spelled out (the private ones are not in *).
from vivit_hpo.testing.tiny import (  # noqa: F401
    __all__,
    tiny_base,
)
