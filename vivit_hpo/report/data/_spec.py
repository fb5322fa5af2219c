"""The search space of a study's spec, as the sections that read it need it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["param_targets", "spec_space"]


def spec_space(spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The spec's ``space``: parameter name -> its mapping (``{}`` when there is none)."""
    space = spec.get("space")
    if not isinstance(space, dict):
        return {}
    return {str(k): v for k, v in space.items() if isinstance(v, dict)}


def param_targets(param: Mapping[str, Any]) -> list[str]:
    """The config keys a space parameter writes (its ``to:``, one key or a list)."""
    to = param.get("to")
    return [to] if isinstance(to, str) else [str(x) for x in to] if isinstance(to, list) else []
