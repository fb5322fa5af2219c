"""The search space: sampling, enumeration and the mapping of values onto run configs.

Pure functions, apart from :func:`suggest`, which asks an Optuna trial (or anything with the
``suggest_*`` methods, e.g. ``optuna.trial.FixedTrial``) for each value. A parameter's values
are the user's names (``{"patch": 4, "stride": 2, ...}``); :func:`optuna_name` gives the name
under which Optuna stores it, which differs only for ``le`` parameters: Optuna needs one fixed
distribution per name, so ``stride`` sampled below ``patch=4`` is ``stride|patch=4``, with
choices ``[2, 4]``. A stride larger than its patch is therefore never sampled, and a bound that
leaves a single value fixes it without asking the sampler.

- :mod:`._sample`: the values of one parameter, :func:`enumerate_space`, :func:`sample_random`
  and :func:`suggest`;
- :mod:`._values`: values given by hand (``study enqueue --set``), checked
  (:func:`check_values`, :func:`enqueued_problem`) and named as Optuna names them;
- :mod:`._config`: values onto a run config (:func:`to_overrides`, :func:`trial_config`) and
  the base config's own values (:func:`base_values`);
- :mod:`._feasible`: whether a configuration may train (:func:`infeasible_reason`).

Every name is re-exported here.
"""

from __future__ import annotations

from vivit_hpo.search.space._config import base_values, target_exists, to_overrides, trial_config
from vivit_hpo.search.space._feasible import Shape as Shape
from vivit_hpo.search.space._feasible import infeasible_reason, input_shapes
from vivit_hpo.search.space._sample import (
    Infeasible,
    enumerate_space,
    optuna_name,
    sample_random,
    space_size,
    suggest,
)
from vivit_hpo.search.space._values import check_values, enqueued_problem, to_optuna_params

__all__ = [
    "Infeasible",
    "base_values",
    "check_values",
    "enqueued_problem",
    "enumerate_space",
    "infeasible_reason",
    "input_shapes",
    "optuna_name",
    "sample_random",
    "space_size",
    "suggest",
    "target_exists",
    "to_optuna_params",
    "to_overrides",
    "trial_config",
]
