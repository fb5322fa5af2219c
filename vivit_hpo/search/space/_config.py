"""A trial's values onto its run config: the base config's own values of the space, the
overrides a trial's values make, and the run config they give."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from vivit_hpo.config import RunConfig, parse_run_config, set_key, split_key
from vivit_hpo.errors import ConfigError
from vivit_hpo.search.schema import ParamSpec
from vivit_hpo.search.space._sample import _active
from vivit_hpo.search.space._values import _take


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
