"""vivit-hpo: hyperparameter search for ViViT encoding models of visual neurons.

The public API, from Python (see :mod:`vivit_hpo.api`)::

    import vivit_hpo as vh

    vh.create_study("studies/quickstart.yaml", name="qs", storage="sqlite:///qs.db")
    vh.run_worker("qs", storage="sqlite:///qs.db", device="cpu")
    vh.load_study("qs", storage="sqlite:///qs.db").best_trial

Its names are imported when first used, so that ``import vivit_hpo`` (and ``vivit-hpo
--help``) load neither torch nor optuna.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vivit_hpo.api import (
        TrainResult,
        create_study,
        load_study,
        run_study,
        run_worker,
        train,
    )
    from vivit_hpo.config import RunConfig, load_run_config, parse_run_config
    from vivit_hpo.data import synthesize
    from vivit_hpo.search.spec import StudySpec, load_spec, parse_spec
    from vivit_hpo.search.worker import WorkerSummary
    from vivit_hpo.training import load_run

__version__ = "0.1.0"

# Each public name (but the version) and the module it comes from.
_LAZY: dict[str, str] = {
    "RunConfig": "vivit_hpo.config",
    "StudySpec": "vivit_hpo.search.spec",
    "TrainResult": "vivit_hpo.api",
    "WorkerSummary": "vivit_hpo.search.worker",
    "create_study": "vivit_hpo.api",
    "load_run": "vivit_hpo.training",
    "load_run_config": "vivit_hpo.config",
    "load_spec": "vivit_hpo.search.spec",
    "load_study": "vivit_hpo.api",
    "parse_run_config": "vivit_hpo.config",
    "parse_spec": "vivit_hpo.search.spec",
    "run_study": "vivit_hpo.api",
    "run_worker": "vivit_hpo.api",
    "synthesize": "vivit_hpo.data",
    "train": "vivit_hpo.api",
}

__all__ = [
    "RunConfig",
    "StudySpec",
    "TrainResult",
    "WorkerSummary",
    "__version__",
    "create_study",
    "load_run",
    "load_run_config",
    "load_spec",
    "load_study",
    "parse_run_config",
    "parse_spec",
    "run_study",
    "run_worker",
    "synthesize",
    "train",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562), and keep it as the package's attribute."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
