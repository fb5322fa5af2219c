"""Sampling a search space: enumeration, seeded random draws, and asking an Optuna trial.

A parameter's values are the user's names; :func:`optuna_name` gives the name under which
Optuna stores one, which differs only for ``le`` parameters (``stride|patch=4``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from vivit_hpo.search.schema import ParamSpec


class Infeasible(Exception):
    """A sampled configuration that must not train; ``str(e)`` is the reason (one line)."""


class _Suggester(Protocol):
    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int: ...

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...


# -- the values of one parameter -----------------------------------------------------------------


def _active(p: ParamSpec, values: Mapping[str, Any]) -> bool:
    return all(values.get(k) in allowed for k, allowed in (p.when or {}).items())


def _bound(p: ParamSpec, values: Mapping[str, Any]) -> Any:
    return None if p.le is None else values[p.le]


def _no_value(name: str, p: ParamSpec, values: Mapping[str, Any]) -> Infeasible:
    return Infeasible(f"{name}: no value <= {p.le}={values.get(p.le or '')}")


def _choices(p: ParamSpec, values: Mapping[str, Any]) -> list[Any]:
    """The categorical choices left once the ``le`` bound applies."""
    bound = _bound(p, values)
    choices = list(p.choices or [])
    return choices if bound is None else [c for c in choices if c <= bound]


def _int_range(p: ParamSpec, values: Mapping[str, Any]) -> tuple[int, int]:
    bound = _bound(p, values)
    low, high = int(p.low or 0), int(p.high or 0)
    return low, high if bound is None else min(high, int(bound))


def optuna_name(name: str, p: ParamSpec, values: Mapping[str, Any]) -> str:
    """The name Optuna stores the parameter under (``stride|patch=4`` for ``le`` ones)."""
    return name if p.le is None else f"{name}|{p.le}={values[p.le]}"


def _candidates(p: ParamSpec, values: Mapping[str, Any]) -> list[Any]:
    """Representative values for enumeration: all choices, both ends of an int range, the low
    end of a float range (validity never depends on an optimiser setting's exact value)."""
    kind = p.kind
    if kind == "fixed":
        return [p.value]
    if kind == "categorical":
        return _choices(p, values)
    if kind == "int":
        low, high = _int_range(p, values)
        return [] if low > high else sorted({low, high})
    return [p.low]


def enumerate_space(space: Mapping[str, ParamSpec]) -> Iterator[dict[str, Any]]:
    """Every combination of categorical values (int ranges by their ends, float ranges by their
    low end), respecting ``le`` and ``when``; a combination with no valid value is skipped."""
    items = list(space.items())

    def walk(i: int, values: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if i == len(items):
            yield dict(values)
            return
        name, p = items[i]
        if not _active(p, values):
            yield from walk(i + 1, values)
            return
        for v in _candidates(p, values):
            values[name] = v
            yield from walk(i + 1, values)
            del values[name]

    yield from walk(0, {})


def space_size(space: Mapping[str, ParamSpec]) -> int:
    """An upper bound of :func:`enumerate_space`'s length (``le`` and ``when`` ignored)."""
    return math.prod(
        len(_candidates(p, {}) if p.le is None else p.choices or [0, 0]) for p in space.values()
    )


def sample_random(space: Mapping[str, ParamSpec], seed: int) -> dict[str, Any]:
    """One configuration drawn uniformly (log-uniformly for log ranges); pure and seeded.

    Raises:
        Infeasible: an ``le`` bound leaves no value.
    """
    rng = random.Random(seed)
    values: dict[str, Any] = {}
    for name, p in space.items():
        if not _active(p, values):
            continue
        kind = p.kind
        if kind == "fixed":
            values[name] = p.value
        elif kind == "categorical":
            choices = _choices(p, values)
            if not choices:
                raise _no_value(name, p, values)
            values[name] = rng.choice(choices)
        elif kind == "int":
            low, high = _int_range(p, values)
            if low > high:
                raise _no_value(name, p, values)
            values[name] = rng.randint(low, high)
        else:
            lo, hi = float(p.low or 0.0), float(p.high or 0.0)
            values[name] = (
                math.exp(rng.uniform(math.log(lo), math.log(hi))) if p.log else rng.uniform(lo, hi)
            )
    return values


def suggest(trial: _Suggester, space: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """Ask ``trial`` for every active parameter, in the space's order.

    Returns:
        ``{name: value}`` under the user's names (fixed and single-choice values included).

    Raises:
        Infeasible: an ``le`` bound leaves no value (e.g. stride choices [4, 8] under patch 2).
    """
    values: dict[str, Any] = {}
    for name, p in space.items():
        if not _active(p, values):
            continue
        key = optuna_name(name, p, values)
        kind = p.kind
        if kind == "fixed":
            values[name] = p.value
        elif kind == "categorical":
            choices = _choices(p, values)
            if not choices:
                raise _no_value(name, p, values)
            values[name] = (
                choices[0] if len(choices) == 1 else trial.suggest_categorical(key, choices)
            )
        elif kind == "int":
            low, high = _int_range(p, values)
            if low > high:
                raise _no_value(name, p, values)
            step = int(p.step or 1)
            values[name] = (
                low if low == high else trial.suggest_int(key, low, high, step=step, log=p.log)
            )
        else:
            values[name] = trial.suggest_float(
                key, float(p.low or 0.0), float(p.high or 0.0), step=p.step, log=p.log
            )
    return values
