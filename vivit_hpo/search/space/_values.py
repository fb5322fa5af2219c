"""Values given to a trial by hand (``study enqueue --set``, or anything that enqueues one):
checked against the space, one line naming the bad value and what its parameter takes."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Any

import yaml

from vivit_hpo.config import parse_value
from vivit_hpo.errors import SpecError
from vivit_hpo.search.schema import ParamSpec
from vivit_hpo.search.space._sample import _active, _choices, _int_range, optuna_name


def to_optuna_params(space: Mapping[str, ParamSpec], values: Mapping[str, Any]) -> dict[str, Any]:
    """User-named values (e.g. from ``study enqueue --set``), checked by :func:`check_values`
    -> Optuna's parameter names (fixed parameters left out: nothing samples them).

    Raises:
        SpecError: an unknown name, a value the parameter cannot take, or an ``le`` parameter
            given without its bound.
    """
    checked = check_values(space, values)
    known = {**{n: p.value for n, p in space.items() if p.kind == "fixed"}, **checked}
    return {
        optuna_name(name, space[name], known): value
        for name, value in checked.items()
        if space[name].kind != "fixed"
    }


# -- values given to a trial (study enqueue, or anything that enqueues one) ----------------------


def _same(a: Any, b: Any) -> bool:
    """Equal and both booleans or neither (``True == 1`` in Python, not here)."""
    return isinstance(a, bool) == isinstance(b, bool) and bool(a == b)


def _g(x: float | None) -> str:
    return f"{x or 0.0:g}"


def _allowed(p: ParamSpec, values: Mapping[str, Any]) -> str:
    """What ``p`` takes, in words, under its ``le`` bound in ``values`` (which must hold it)."""
    kind = p.kind
    if kind == "fixed":
        return f"only {p.value!r} (fixed by the space)"
    under = "" if p.le is None else f" (<= {p.le}={values[p.le]!r})"
    if kind == "categorical":
        return f"one of {_choices(p, values)}{under}"
    step = f" in steps of {_g(p.step)} from {_g(p.low)}" if p.step else ""
    if kind == "int":
        low, high = _int_range(p, values)
        return f"an integer in [{low}, {high}]{step}{under}"
    log = " (log scale)" if p.log else ""
    return f"a number in [{_g(p.low)}, {_g(p.high)}]{step}{log}"


def _take(name: str, p: ParamSpec, v: Any, values: Mapping[str, Any]) -> tuple[Any, str | None]:
    """``(v as the parameter takes it, None)``: the choice itself (4, not 4.0), an int, a float;
    or ``(None, why not)``, one line naming the parameter, the value and what it takes.
    ``values`` holds the earlier parameters (``p.le`` among them when it has one)."""
    kind = p.kind

    def no(what: str) -> tuple[Any, str]:
        return None, f"{name}={v!r}: {what}; {name} takes {_allowed(p, values)}"

    if kind == "fixed":
        return (p.value, None) if _same(v, p.value) else no("not the space's value")
    if kind == "categorical":
        for c in _choices(p, values):
            if _same(v, c):
                return c, None
        if any(_same(v, c) for c in p.choices or []):
            return no(f"larger than {p.le}={values.get(p.le or '')!r}")
        return no("not one of its choices")
    number = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    if not number or (kind == "int" and v != int(v)):
        return no("not an integer" if kind == "int" else "not a number")
    if kind == "int":
        first, last = _int_range(p, values)
        if not first <= v <= last:
            return no("outside its range")
        if (int(v) - first) % int(p.step or 1):
            return no("not on its steps")
        return int(v), None
    low, high = float(p.low or 0.0), float(p.high or 0.0)
    if not low <= v <= high:
        return no("outside its range")
    if p.step and abs((k := (v - low) / p.step) - round(k)) > 1e-8:
        return no("not on its steps")
    return float(v), None


def check_values(space: Mapping[str, ParamSpec], values: Mapping[str, Any]) -> dict[str, Any]:
    """The user-named values of ``study enqueue --set``, as the space takes them (the choice
    itself, ints, floats), in the space's order: each must be one of its parameter's choices or
    inside its range (on its steps, an integer for an int), no larger than its ``le`` bound
    (which must be given too), and active where the values decide its ``when``.

    Raises:
        SpecError: one line naming the parameter, the bad value and what it takes (or the
            parameters there are, for an unknown name).
    """
    for name, v in values.items():
        if name not in space:
            close = difflib.get_close_matches(name, list(space), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SpecError(
                f"--set {name}={v!r}: not a parameter of the study's space{hint}; its "
                f"parameters are {', '.join(space)}, and a dotted run-config key (e.g. "
                "train.batch_size=8) overrides any other setting for this trial"
            )
    known: dict[str, Any] = {n: p.value for n, p in space.items() if p.kind == "fixed"}
    out: dict[str, Any] = {}
    for name, p in space.items():
        if name not in values:
            continue
        if p.le is not None and p.le not in known:
            b = space[p.le]
            example = (b.choices or [int(b.high or 0)])[-1]
            raise SpecError(
                f"--set {name}={values[name]!r}: also give {p.le} (the values {name} takes "
                f"depend on {p.le}), e.g. --set {p.le}={example}"
            )
        when = p.when or {}
        if all(k in known for k in when) and not _active(p, known):
            needs = " and ".join(f"{k} is one of {allowed}" for k, allowed in when.items())
            now = ", ".join(f"{k}={known[k]!r}" for k in when)
            raise SpecError(
                f"--set {name}={values[name]!r}: {name} exists only when {needs} (here {now}); "
                f"drop it or change {', '.join(when)}"
            )
        value, problem = _take(name, p, values[name], known)
        if problem is not None:
            raise SpecError(f"--set {problem}")
        known[name] = out[name] = value
    return out


def enqueued_problem(space: Mapping[str, ParamSpec], fixed: Mapping[str, Any]) -> str | None:
    """Why a trial's enqueued values cannot be sampled as they are, or None.

    Args:
        space: the study's space.
        fixed: the values the trial was enqueued with, under Optuna's names (its system
            attribute ``fixed_params``), e.g. by another tool or an older version that did not
            check them: each is checked as :func:`check_values` checks ``study enqueue``'s, a
            bounded one (``stride|patch=4``) against the bound its name holds.

    Returns:
        One line naming the parameter, the bad value and what it takes; None when Optuna can
        use every value (a fixed or inactive parameter's is never asked for, so never used).
    """
    plain = {k: v for k, v in fixed.items() if "|" not in k}
    known = {**{n: p.value for n, p in space.items() if p.kind == "fixed"}, **plain}
    for key, v in fixed.items():
        name, _, bound = key.partition("|")
        p = space.get(name)
        bound_name, _, bound_value = bound.partition("=")
        again = "enqueue the trial again with `vivit-hpo study enqueue`"
        if p is None or (p.le is None and bound):
            return (
                f"{key}={v!r}: not a parameter of the study's space ({', '.join(space)}); {again}"
            )
        if p.le is not None and bound_name != p.le:
            return f"{key}={v!r}: {name} depends on {p.le}, so it is {name}|{p.le}=V; {again}"
        values = dict(known)
        if p.le is not None:
            try:
                raw: Any = parse_value(bound_value)  # as optuna_name wrote it
            except yaml.YAMLError:
                raw = bound_value
            values[p.le], problem = _take(p.le, space[p.le], raw, known)
            if problem is not None:
                return f"{key}={v!r}: its bound {problem}"
        if p.kind == "fixed" or not _active(p, values):
            continue
        _, problem = _take(name, p, v, values)
        if problem is not None:
            return problem
    return None
