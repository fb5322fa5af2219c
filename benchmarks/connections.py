"""PostgreSQL connections held by N real workers of one study, sampled while they run.

    python benchmarks/connections.py --storage postgresql://... --workers 50 --out conns.json

A thin entry point to ``python -m vivit_hpo.bench.connections`` (see its docstring).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from vivit_hpo.bench.connections import main

if __name__ == "__main__":
    raise SystemExit(main())
