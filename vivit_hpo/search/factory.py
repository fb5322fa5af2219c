"""Samplers and pruners by name, built by every worker from the study's spec.

Optuna does not store samplers or pruners in the database, so each worker process rebuilds them
from the spec stored in the study. Each worker seeds its sampler from the spec's seed and the
first trial it claims (:func:`worker_seed`), so that concurrent workers do not draw the same
random configurations; TPE's constant liar keeps their later suggestions apart.
"""

from __future__ import annotations

import math
from collections.abc import Container, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from vivit_hpo.errors import SpecError
from vivit_hpo.search.record import is_yardstick
from vivit_hpo.search.schema import StudySpec, effective_n_trials

__all__ = [
    "SearchOnlyPruner",
    "SearchOnlySampler",
    "build_pruner",
    "build_sampler",
    "hyperband_min_resource",
    "is_conditional",
    "tpe_startup_trials",
    "worker_seed",
]


def is_conditional(spec: StudySpec) -> bool:
    """True when some parameter exists only in some trials (``when``, or ``le`` names)."""
    return any(p.le is not None or p.when for p in spec.space.values())


def worker_seed(seed: int | None, first_trial: int) -> int | None:
    """The sampler seed of a worker whose first trial is ``first_trial``.

    Workers built with one seed would draw the same random (startup) configurations, so each
    worker offsets the spec's seed by the number of the first trial it claimed: different for
    every worker of a study, and reproducible for a single worker (its first trial is 0).
    """
    return None if seed is None else (seed * 1_000_003 + first_trial) % 2**32


class _WorkerGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its stop: after the last grid point its ``after_trial``
    calls ``study.stop()``, which raises outside ``optimize()`` (the workers run their own
    loop). The study's budget is the grid's size (``effective_n_trials``), so the workers stop
    there anyway, and a retried point keeps its ``grid_id``."""

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: optuna.trial.TrialState,
        values: Sequence[float] | None,
    ) -> None:
        return None


class _SearchView:
    """A study as the sampler and the pruner see it: without its yardstick trials.

    A yardstick (the spec's ``baselines``) has no parameters of the space; left in, a COMPLETE
    one would empty the intersection search space of multivariate TPE (every later trial then
    sampled independently), count as one of TPE's startup trials and take a place in TPE's
    "good" group, and a percentile pruner would compare trials with its reports."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        trials = self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        return [t for t in trials if not is_yardstick(t)]

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


def _view(study: optuna.Study) -> optuna.Study:
    return _SearchView(study)  # type: ignore[return-value]  # duck-typed: what samplers read


class SearchOnlySampler(optuna.samplers.BaseSampler):
    """The spec's sampler, shown the search's trials only (:class:`_SearchView`); a yardstick
    trial samples nothing (it trains a fixed run config)."""

    def __init__(self, inner: optuna.samplers.BaseSampler) -> None:
        self.inner = inner

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if is_yardstick(trial):
            return {}
        return self.inner.infer_relative_search_space(_view(study), trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if is_yardstick(trial) or not search_space:
            return {}
        return self.inner.sample_relative(_view(study), trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self.inner.sample_independent(_view(study), trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if not is_yardstick(trial):
            self.inner.before_trial(_view(study), trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        if not is_yardstick(trial):
            self.inner.after_trial(_view(study), trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


class SearchOnlyPruner(optuna.pruners.BasePruner):
    """The spec's pruner, comparing the search's trials only (:class:`_SearchView`). Not used
    for Hyperband: Optuna finds its brackets by its type, and it compares only the trials that
    asked it at a rung, which a yardstick never does."""

    def __init__(self, inner: optuna.pruners.BasePruner) -> None:
        self.inner = inner

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return self.inner.prune(_view(study), trial)


def build_sampler(spec: StudySpec, first_trial: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's sampler (:func:`_build_sampler`), shown the search's trials only
    (:class:`SearchOnlySampler`: no yardstick)."""
    return SearchOnlySampler(_build_sampler(spec, first_trial))


def _build_sampler(spec: StudySpec, first_trial: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's sampler: ``tpe`` (Optuna 5 defaults: multivariate, constant liar; grouped when
    the space is conditional; :func:`tpe_startup_trials` random trials first), ``random``,
    ``grid`` (categorical parameters only), ``gp`` or ``cmaes``; ``sampler.options`` are passed
    as keyword arguments. The seed is :func:`worker_seed` of the spec's seed and
    ``first_trial``.

    Raises:
        SpecError: grid search over a range or a conditional parameter.
        TypeError/ValueError: an option the sampler does not take (``check_spec`` reports it).
    """
    s = spec.sampler
    seed = worker_seed(s.seed, first_trial)
    opts: dict[str, Any] = dict(s.options)
    if s.name == "tpe":
        opts.setdefault("n_startup_trials", tpe_startup_trials(spec))
        if is_conditional(spec):
            # Grouped multivariate TPE models each set of co-occurring parameters jointly,
            # instead of falling back to independent sampling for conditional ones.
            opts.setdefault("group", True)
            opts.setdefault("multivariate", True)
        return optuna.samplers.TPESampler(seed=seed, **opts)
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed, **opts)
    if s.name == "grid":
        grid: dict[str, list[Any]] = {}
        for name, p in spec.space.items():
            if p.kind == "fixed":
                continue
            if p.kind != "categorical" or p.le is not None or p.when:
                raise SpecError(
                    f"sampler.name = 'grid': space.{name} is a range or conditional; give every "
                    "parameter a plain list of choices (or a fixed value)"
                )
            grid[name] = list(p.choices or [])
        return _WorkerGridSampler(grid, seed=seed, **opts)
    if s.name == "gp":
        return optuna.samplers.GPSampler(seed=seed, **opts)
    assert s.name == "cmaes"
    return optuna.samplers.CmaEsSampler(seed=seed, **opts)


def tpe_startup_trials(spec: StudySpec) -> int:
    """TPE's random startup trials by default: a fifth of the budget, between 3 and Optuna's 10.

    Optuna's 10 is most of a small study (and, under Hyperband, each bracket starts random on
    its own); a fifth leaves four fifths of the budget to the model of the space.
    """
    return int(min(10, max(3, effective_n_trials(spec) // 5)))


def hyperband_min_resource(spec: StudySpec, reduction_factor: int) -> int:
    """The first Hyperband rung by default: the first epoch after the learning-rate warm-up, and
    late enough that there are at most 2 brackets (1 under 30 trials).

    A rung inside the warm-up ranks trials by how fast their learning rate rises, not by how
    well they learn; and Optuna's Hyperband shows the sampler only the trials of its own bracket,
    so every bracket splits TPE's history (and repeats its random startup).
    """
    warmup = float(spec.base_tree()["train"]["warmup_epochs"] or 0.0)
    after_warmup = math.ceil(warmup) + 1 if warmup > 0 else 1
    brackets = 1 if effective_n_trials(spec) < 30 else 2
    fewer_brackets = spec.epochs // reduction_factor**brackets + 1
    return int(max(1, min(spec.epochs, max(after_warmup, fewer_brackets))))


def build_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The spec's pruner (:func:`_build_pruner`); all but Hyperband compare the search's
    trials only (:class:`SearchOnlyPruner`: no yardstick)."""
    pruner = _build_pruner(spec)
    if isinstance(pruner, optuna.pruners.HyperbandPruner):
        return pruner
    return SearchOnlyPruner(pruner)


def _build_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The spec's pruner, with epochs as the resource (intermediate step = epoch, 1-based).

    ``hyperband`` (min_resource :func:`hyperband_min_resource`, max_resource = the per-trial
    epochs, reduction factor 3),
    ``median`` (5 startup trials, 1 warm-up epoch), ``successive_halving`` (min_resource 1,
    reduction factor 3), ``patient`` (stop after ``patience`` epochs without improvement,
    default 3; ``wrapped: median`` to combine), ``none``. ``pruner.options`` override these.
    """
    p = spec.pruner
    opts: dict[str, Any] = dict(p.options)
    if p.name == "hyperband":
        opts.setdefault("max_resource", spec.epochs)
        opts.setdefault("reduction_factor", 3)
        opts.setdefault("min_resource", hyperband_min_resource(spec, opts["reduction_factor"]))
        return optuna.pruners.HyperbandPruner(**opts)
    if p.name == "median":
        opts.setdefault("n_startup_trials", 5)
        opts.setdefault("n_warmup_steps", 1)
        return optuna.pruners.MedianPruner(**opts)
    if p.name == "successive_halving":
        opts.setdefault("min_resource", 1)
        opts.setdefault("reduction_factor", 3)
        return optuna.pruners.SuccessiveHalvingPruner(**opts)
    if p.name == "patient":
        wrapped = opts.pop("wrapped", None)
        if wrapped not in (None, "median", "none"):
            raise SpecError(f"pruner.options.wrapped = {wrapped!r}: expected median or none")
        inner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
        opts.setdefault("patience", 3)
        return optuna.pruners.PatientPruner(inner if wrapped == "median" else None, **opts)
    assert p.name == "none"
    return optuna.pruners.NopPruner(**opts)
