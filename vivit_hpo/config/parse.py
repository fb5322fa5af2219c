"""Reading a run config at the edge: YAML files, the ``--set`` override grammar, and errors
of one line that name the bad key.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from vivit_hpo.config.schema import RunConfig, core_kind
from vivit_hpo.errors import ConfigError

__all__ = [
    "apply_overrides",
    "format_validation_error",
    "load_run_config",
    "parse_override",
    "parse_run_config",
    "parse_value",
    "read_yaml",
    "set_key",
    "split_key",
]

_CORE_TAGS = ("vivit", "cnn", "cnn2d", "ln")
# Keys that were removed, and what replaces them.
_REMOVED_KEYS = {
    "train.max_val_batches": (
        "removed; cap validation in bins of the data with data.max_val_bins (null: all of it)"
    ),
}


def format_validation_error(err: ValidationError, where: str) -> str:
    """One line naming the first bad key of a pydantic error, its value and what is wrong."""
    first = err.errors()[0]
    parts = [str(p) for p in first["loc"] if not str(p).startswith("function-after")]
    # Drop the union tag pydantic puts after a discriminated field ("core.vivit.embed_dim").
    loc = ".".join(
        p for i, p in enumerate(parts) if not (i and parts[i - 1] == "core" and p in _CORE_TAGS)
    )
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = _REMOVED_KEYS.get(loc, "unknown key; check its spelling against the documented keys")
    value = first.get("input")
    shown = "" if first["type"] == "extra_forbidden" or isinstance(value, dict) else f" = {value!r}"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{where}: {loc or '<root>'}{shown}: {msg}{more}"


# -- overrides: the one grammar of `train --set`, `base.overrides`, `study enqueue --set` and
# the space's `to:` keys ----------------------------------------------------------------------
#
# A key is dotted (``train.lr``) and may end in ``[i]``, one axis of a tuple-valued key
# (``model.core.kernel_size[0]``). A scalar written to a tuple-valued key fills every axis
# (``model.core.kernel_size=4`` -> ``(4, 4, 4)``); a list or mapping replaces the value. Values
# are YAML, with YAML 1.2's numbers: ``1e-3`` is a float (PyYAML's YAML 1.1 reads it as a string).

_KEY = re.compile(r"([^.\[\]=\s]+(?:\.[^.\[\]=\s]+)*)(?:\[(\d+)\])?")
_FLOAT_12 = re.compile(r"[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.[\d_]+)[eE][-+]?\d+")


class _ValueLoader(yaml.SafeLoader):
    """YAML's safe loader that also reads ``1e-3`` (no dot) as a float, as YAML 1.2 does."""


_ValueLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(f"^{_FLOAT_12.pattern}$"), list("-+0123456789.")
)


def parse_value(raw: str) -> Any:
    """An override's value: YAML (``4``, ``1e-3``, ``[2, 4, 4]``, ``{kind: cnn}``, ``null``).

    Raises:
        yaml.YAMLError: not valid YAML.
    """
    return yaml.load(raw, Loader=_ValueLoader)  # a SafeLoader: no arbitrary objects


def split_key(key: str) -> tuple[list[str], int | None]:
    """``"model.core.kernel_size[0]"`` -> ``(["model", "core", "kernel_size"], 0)``.

    Raises:
        ConfigError: not a dotted key with an optional ``[i]``.
    """
    m = _KEY.fullmatch(key)
    if m is None:
        raise ConfigError(
            f"--set {key!r}: not a key; use a dotted key (train.lr), optionally with one axis "
            "of a tuple (model.core.kernel_size[0])"
        )
    return m.group(1).split("."), None if m.group(2) is None else int(m.group(2))


def parse_override(item: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, value)``, the value parsed by :func:`parse_value`.

    Raises:
        ConfigError: no ``=``, an empty or malformed key, or a value that is not valid YAML.
    """
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set train.lr=1e-3")
    split_key(key)
    try:
        return key, parse_value(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML") from e


def _default_at(tree: Mapping[str, Any], parts: Sequence[str]) -> Any:
    """The default run config's value at ``parts`` for the core kind ``tree`` has (None where
    there is none): what a key that a partial tree leaves out holds once parsed."""
    model = tree.get("model")
    core = model.get("core") if isinstance(model, Mapping) else None
    try:
        node: Any = RunConfig.model_validate({"model": {"core": {"kind": core_kind(core)}}})
    except ValidationError:
        return None
    node = node.to_dict()
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def set_key(tree: dict[str, Any], key: str, value: Any) -> None:
    """Write ``value`` at ``key`` of the run-config mapping ``tree``, in place (see above).

    A key the tree leaves out holds its default: ``kernel_size[0]=2`` or ``kernel_size=4`` on a
    tree without a kernel size write into the default one.

    Raises:
        ConfigError: a malformed key, a part of it that is not a section, an index into a value
            that is not a tuple or past its end.
    """
    parts, index = split_key(key)
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a section")
        node = child
    leaf = parts[-1]
    scalar = not isinstance(value, list | tuple | dict) and value is not None
    current = node.get(leaf)
    if leaf not in node and (index is not None or scalar):
        current = _default_at(tree, parts)
    if index is not None:
        if not isinstance(current, list | tuple):
            raise ConfigError(f"--set {key}: {'.'.join(parts)} is not a tuple of axes")
        if index >= len(current):
            raise ConfigError(
                f"--set {key}: {'.'.join(parts)} has {len(current)} axes; use an index below "
                f"{len(current)}"
            )
        node[leaf] = [*current[:index], value, *current[index + 1 :]]
    elif scalar and isinstance(current, list | tuple) and current:
        node[leaf] = [value] * len(current)  # patch 4 -> (4, 4, 4)
    else:
        node[leaf] = value


def apply_overrides(tree: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``tree`` with each ``key=value`` applied (:func:`parse_override`,
    :func:`set_key`).

    Raises:
        ConfigError: a malformed override (one line naming it).
    """
    out = copy.deepcopy(dict(tree))
    for item in overrides:
        set_key(out, *parse_override(item))
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file (``{}`` for an empty one).

    Raises:
        ConfigError: no such file, a folder, a file that cannot be read or is not UTF-8 text,
            invalid YAML, or YAML whose top level is not a mapping (one line naming the file).
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a file; pass the path of a YAML config")
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; pass the path of a YAML config")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path}: not a text file (byte {e.start} is not UTF-8); pass a YAML config"
        ) from e
    except OSError as e:
        raise ConfigError(
            f"{path}: cannot be read ({e.strerror or e.__class__.__name__}); check its "
            "permissions or pass another file"
        ) from e
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}; fix the syntax") from e
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return tree


def parse_run_config(tree: Mapping[str, Any], where: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, where)) from e


def load_run_config(path: str | Path | None, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a run config from YAML (or the defaults when ``path`` is None) and apply ``--set``."""
    tree = read_yaml(path) if path is not None else {}
    return parse_run_config(apply_overrides(tree, overrides), str(path or "config"))
