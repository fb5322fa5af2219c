"""The study coordinator's own overhead per trial (ask, reports, tell) with concurrent workers.

    python benchmarks/coordinator_overhead.py --storage postgresql://... --workers 8 --trials 2000

A thin entry point to ``python -m vivit_hpo.bench.coordinator_overhead`` (see its docstring).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from vivit_hpo.bench.coordinator_overhead import main

if __name__ == "__main__":
    raise SystemExit(main())
