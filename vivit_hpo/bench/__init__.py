"""The training-step benchmark: our step and the reference's, timed side by side in one run.

``vivit-hpo bench --model CONFIG.yaml`` (or ``python -m vivit_hpo.bench``) prints samples/s,
TFLOP/s, percent of a matrix ceiling measured in the same run, and peak memory; see
``benchmarks/NOTES.md`` for how figures are recorded.

Beside it, the rig that measures and shakes the study service from outside (each module imported
on its own; this package's names are the training-step benchmark's):

- :mod:`~vivit_hpo.bench.search` (and :mod:`~vivit_hpo.bench.search_curves`, its arithmetic):
  ``vivit-hpo bench search``, what a search strategy buys;
- :mod:`~vivit_hpo.bench.models`: ``vivit-hpo bench models``, the searched ViViT against the
  yardsticks;
- :mod:`~vivit_hpo.bench.chaos`: ``vivit-hpo bench chaos``, a study run while workers are
  killed and the database goes away;
- :mod:`~vivit_hpo.bench.connections` and :mod:`~vivit_hpo.bench.coordinator_overhead`: the
  PostgreSQL connections of N workers, and the coordinator's own cost per trial.
"""

from __future__ import annotations

from vivit_hpo.bench.backends import (
    BACKENDS,
    SDPA_PINS,
    attention_override,
    project_backend,
    sdpa_pin,
)
from vivit_hpo.bench.reference import (
    REFERENCE_ENV,
    build_reference,
    default_reference_path,
    load_reference,
    reference_kwargs,
)
from vivit_hpo.bench.runner import (
    DEFAULT_INPUT,
    SCHEMA,
    BenchSettings,
    measure,
    profile_workload,
    render_table,
    run_bench,
)
from vivit_hpo.bench.timing import (
    Ceiling,
    PeakMemory,
    StepTiming,
    matmul_ceiling,
    synchronize,
    time_steps,
)
from vivit_hpo.bench.workload import Workload, bench_config, build_ours, synthetic_session

__all__ = [
    "BACKENDS",
    "DEFAULT_INPUT",
    "REFERENCE_ENV",
    "SCHEMA",
    "SDPA_PINS",
    "BenchSettings",
    "Ceiling",
    "PeakMemory",
    "StepTiming",
    "Workload",
    "attention_override",
    "bench_config",
    "build_ours",
    "build_reference",
    "default_reference_path",
    "load_reference",
    "matmul_ceiling",
    "measure",
    "profile_workload",
    "project_backend",
    "reference_kwargs",
    "render_table",
    "run_bench",
    "sdpa_pin",
    "synchronize",
    "synthetic_session",
    "time_steps",
]
