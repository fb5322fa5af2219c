"""The search space: sampling, enumeration and the mapping of values onto run configs.

Pure functions, apart from :func:`suggest`, which asks an Optuna trial (or anything with the
``suggest_*`` methods, e.g. ``optuna.trial.FixedTrial``) for each value. A parameter's values
are the user's names (``{"patch": 4, "stride": 2, ...}``); :func:`optuna_name` gives the name
under which Optuna stores it, which differs only for ``le`` parameters: Optuna needs one fixed
distribution per name, so ``stride`` sampled below ``patch=4`` is ``stride|patch=4``, with
choices ``[2, 4]``. A stride larger than its patch is therefore never sampled, and a bound that
leaves a single value fixes it without asking the sampler.
"""

from __future__ import annotations

import copy
import difflib
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import yaml

from vivit_hpo.config import RunConfig, parse_run_config, parse_value, set_key, split_key
from vivit_hpo.errors import ConfigError, DataError, SpecError
from vivit_hpo.search.schema import ParamSpec, StudySpec

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

Shape = tuple[int, int, int]  # (C, H, W) of a session's frames


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


# -- values -> run config ------------------------------------------------------------------------


def target_exists(tree: Mapping[str, Any], key: str) -> bool:
    """True when ``key`` (dotted, optionally ``[i]``-indexed: :func:`~vivit_hpo.config.split_key`)
    names a value of ``tree``."""
    try:
        parts, index = split_key(key)
    except ConfigError:
        return False
    node: Any = tree
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    if index is None:
        return not isinstance(node, Mapping)
    return isinstance(node, list) and index < len(node)


def _get(tree: Mapping[str, Any], key: str) -> Any:
    """The value of run-config key ``key`` (dotted, optionally ``[i]``-indexed) in ``tree``;
    a tuple-valued key whose axes agree reads as that one value (``(4, 4, 4)`` -> 4)."""
    parts, index = split_key(key)
    node: Any = tree
    for part in parts:
        node = node[part]
    if index is not None:
        return node[index]
    if isinstance(node, list | tuple) and node and all(v == node[0] for v in node):
        return node[0]
    return node


def base_values(space: Mapping[str, ParamSpec], base: Mapping[str, Any]) -> dict[str, Any]:
    """The space's values that the base run config already holds, in the space's order.

    A parameter gets the base config's value at its ``to`` keys when they all hold the same
    value and the parameter can take it (one of its choices, inside its range, under its
    ``le`` bound: as :func:`check_values` checks); a parameter whose base value it cannot take,
    that is inactive (``when``), or whose ``le`` bound was itself left out, is left out (a trial
    enqueued with these values has the sampler draw those).
    """
    values: dict[str, Any] = {}
    for name, p in space.items():
        if not _active(p, values) or (p.le is not None and p.le not in values):
            continue  # inactive, or bounded by a parameter that the sampler will draw
        try:
            got = {repr(_get(base, key)): _get(base, key) for key in p.to}
        except (KeyError, IndexError, TypeError):
            continue
        if len(got) != 1:
            continue
        (v,) = got.values()
        v, problem = _take(name, p, v, values)  # the choice itself (4, not 4.0), as sampled
        if problem is None:
            values[name] = v
    return values


def to_overrides(space: Mapping[str, ParamSpec], values: Mapping[str, Any]) -> dict[str, Any]:
    """``{run-config key: value}`` for every sampled value (a value may feed several keys)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        for key in space[name].to:
            out[key] = value
    return out


def trial_config(
    base: Mapping[str, Any],
    overrides: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> RunConfig:
    """The run config of a trial: the base tree, the space's overrides, then ``extra``, each
    written with :func:`~vivit_hpo.config.set_key` (the grammar of ``--set``).

    Raises:
        ConfigError: the combination is not a valid run config (one line, e.g. heads that do
            not divide the width).
    """
    tree = copy.deepcopy(dict(base))
    for key, value in {**overrides, **(extra or {})}.items():
        set_key(tree, key, value)
    return parse_run_config(tree, "trial config")


# -- feasibility ---------------------------------------------------------------------------------


def input_shapes(spec: StudySpec) -> list[Shape]:
    """The distinct (C, H, W) frame shapes of the study's sessions, read from the file headers.

    Raises:
        SpecError: a session path is missing or unreadable.
    """
    if spec.data.synth is not None:
        size = spec.data.synth.size
        return sorted({(1, h, w) for h, w in (size if isinstance(size, list) else [size])})
    import h5py

    from vivit_hpo.data import expand_paths

    try:
        files = expand_paths(spec.data.paths or [])
    except DataError as e:
        raise SpecError(f"data.paths: {e}") from e
    shapes: set[Shape] = set()
    for path in files:
        try:
            with h5py.File(path, "r") as f:
                shape = f["stim"].shape
        except (OSError, KeyError) as e:
            raise SpecError(
                f"data.paths: {path}: not a readable session file with a `stim` dataset; "
                "check it with `vivit-hpo data inspect`"
            ) from e
        c = 1 if len(shape) == 3 else int(shape[1])
        shapes.add((c, int(shape[-2]), int(shape[-1])))
    return sorted(shapes)


def infeasible_reason(
    spec: StudySpec,
    base: Mapping[str, Any],
    values: Mapping[str, Any],
    shapes: Sequence[Shape],
    *,
    memory_cap_bytes: int | None,
    device_type: str = "cuda",
    extra: Mapping[str, Any] | None = None,
) -> str | None:
    """Why a configuration must not train, or None when it may.

    Checks, cheapest first: the run config's own validation (heads dividing the width, RoPE
    head dims, stride <= kernel), the model's feasibility on every session's frame shape
    (tubelet larger than the frames, fewer than 2 temporal tokens, ...), and the estimated
    training memory of one batch of clips against ``memory_cap_bytes`` (None: not checked),
    with bf16 activations
    where the run would use autocast on ``device_type`` and fp32 ones otherwise.
    """
    from vivit_hpo.models import check_feasible, estimate_memory_bytes
    from vivit_hpo.models.encoder import clip_geometry

    try:
        cfg = trial_config(base, to_overrides(spec.space, values), extra)
    except ConfigError as e:
        return str(e).removeprefix("trial config: ")
    frames = clip_geometry(cfg).frames  # a clip's frames, num_lags for windows
    for c, h, w in shapes:
        reason = check_feasible(cfg.model, (c, frames, h, w), num_lags=cfg.data.num_lags)
        if reason is not None:
            return reason
        if memory_cap_bytes is not None:
            amp = cfg.train.amp == "bf16" or (cfg.train.amp == "auto" and device_type == "cuda")
            need = estimate_memory_bytes(
                cfg.model,
                (c, frames, h, w),
                cfg.train.batch_size,
                activation_bytes=2 if amp else 4,
                num_lags=cfg.data.num_lags,
            )
            if need > memory_cap_bytes:
                return (
                    f"estimated training memory {need / 2**30:.2f} GiB exceeds the "
                    f"{memory_cap_bytes / 2**30:.2f} GiB allowed on this device"
                )
    return None
