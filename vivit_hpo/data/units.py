"""Choosing units as labs do: a filter over the Units table's columns, regions, invalid times.

Pure functions over columns already read from the file (:mod:`vivit_hpo.data.nwb_units` reads
them):

- :class:`UnitFilter`: ``--unit-filter "quality == 'good' and presence_ratio > 0.9"``, an
  expression over the Units table's columns parsed with :mod:`ast` and evaluated column-wise
  with numpy, never with ``eval``. Allowed: comparisons (``== != < <= > >=``, chained, and
  ``in`` / ``not in`` a tuple or list of constants), ``and`` / ``or`` / ``not``, parentheses,
  column names and constants (numbers, quoted text, True / False). A missing value (NaN)
  fails every comparison but ``!=``.
- :func:`allen_qc`: AllenSDK's default unit filter (``UNIT_FILTER_DEFAULTS`` in
  ``allensdk/brain_observatory/ecephys/__init__.py`` and ``EcephysProjectCache._get_units``):
  ``amplitude_cutoff <= 0.1``, ``presence_ratio >= 0.95``, ``isi_violations <= 0.5``, and
  ``quality == 'good'`` when the table has a ``quality`` column.
- :func:`region_mask`: units whose location (their peak channel's, see the reader) is one of
  the regions asked for.
- :func:`invalid_scope`: which units an ``invalid_times`` interval applies to, from its tags
  as AllenSDK writes them (``[scope, scope_id, label]``): an ``EcephysProbe`` interval only
  the units of that probe, an ``optotagging`` one (missing optotagging data) none, any other
  (``EcephysSession``, ``all_probes``, ``stimulus``, untagged) every unit.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vivit_hpo.errors import DataError

__all__ = ["ALLEN_QC_METRICS", "UnitFilter", "allen_qc", "invalid_scope", "region_mask"]

ALLEN_QC_METRICS = "amplitude_cutoff <= 0.1 and presence_ratio >= 0.95 and isi_violations <= 0.5"
_MAX_SHOWN = 12

_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_ALLOWED = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.Compare,
    ast.Name,
    ast.Load,
    ast.In,
    ast.NotIn,
    ast.Not,
    ast.USub,
    ast.UAdd,
    *_COMPARE,
)
_SYMBOL = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.Invert: "~",
    ast.USub: "-",
    ast.UAdd: "+",
    ast.Attribute: ".",
    ast.Call: "a call",
    ast.Subscript: "[]",
}


def _kind(col: np.ndarray) -> str:
    """'bool', 'number' or 'text'."""
    if col.dtype == np.bool_:
        return "bool"
    if col.dtype.kind in "iuf":
        return "number"
    return "text"


def _refuse(text: str, option: str, why: str) -> DataError:
    return DataError(f"{option} {text!r}: {why}")


def _shown(names: Sequence[str]) -> str:
    more = f" and {len(names) - _MAX_SHOWN} more" if len(names) > _MAX_SHOWN else ""
    return ", ".join(names[:_MAX_SHOWN]) + more


@dataclass(frozen=True)
class UnitFilter:
    """A parsed unit filter; :meth:`evaluate` gives the units it keeps."""

    text: str
    tree: ast.Expression
    option: str = "--unit-filter"

    @classmethod
    def parse(cls, text: str, option: str = "--unit-filter") -> UnitFilter:
        """Parse ``text``, refusing anything but comparisons, and/or/not, names and constants.

        Raises:
            DataError: a syntax error or a construct that is not allowed (one line).
        """
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as e:
            raise _refuse(
                text,
                option,
                f"not an expression ({e.msg}); write e.g. \"quality == 'good' and "
                'presence_ratio > 0.9"',
            ) from e
        lists = {
            id(c)
            for n in ast.walk(tree)
            if isinstance(n, ast.Compare)
            for op, c in zip(n.ops, n.comparators, strict=True)
            if isinstance(op, ast.In | ast.NotIn)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.UnaryOp):
                ok = isinstance(node.op, ast.Not) or (
                    isinstance(node.operand, ast.Constant)
                    and isinstance(node.operand.value, int | float)
                )
            elif isinstance(node, ast.Constant):
                ok = isinstance(node.value, str | int | float)
            elif isinstance(node, ast.Tuple | ast.List):
                ok = id(node) in lists
            else:
                ok = isinstance(node, _ALLOWED)
            if not ok:
                what = _describe(node)
                raise _refuse(
                    text,
                    option,
                    f"`{what}` is not allowed; use comparisons of columns with "
                    "constants joined by and / or / not",
                )
        return cls(text=text, tree=tree, option=option)

    @property
    def names(self) -> frozenset[str]:
        """The column names the filter reads."""
        return frozenset(n.id for n in ast.walk(self.tree) if isinstance(n, ast.Name))

    def evaluate(self, columns: Mapping[str, np.ndarray], num_units: int) -> np.ndarray:
        """(N,) bool: the units the filter keeps.

        Args:
            columns: the Units table's one-value-per-unit columns, each (N,) (text as ``str``
                objects); other columns may be left out.
            num_units: N.

        Raises:
            DataError: an unknown column, or a comparison of text with a number.
        """
        missing = sorted(self.names - set(columns))
        if missing:
            have = sorted(columns)
            raise _refuse(
                self.text,
                self.option,
                f"no column {missing[0]!r} in the Units table with one "
                f"value per unit (it has: {_shown(have) or 'none'})",
            )
        out = self._bool(self.tree.body, columns)
        return np.broadcast_to(np.asarray(out, dtype=bool), (num_units,)).copy()

    # -- evaluation: numpy arrays for names, Python values for constants

    def _value(self, node: ast.expr, columns: Mapping[str, np.ndarray]) -> Any:
        if isinstance(node, ast.Name):
            return np.asarray(columns[node.id])
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.operand, ast.Constant):
            v = node.operand.value
            assert isinstance(v, int | float), "parse() lets only numbers be negated"
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.Tuple | ast.List):
            return [self._value(e, columns) for e in node.elts]
        return self._bool(node, columns)

    def _bool(self, node: ast.expr, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        if isinstance(node, ast.BoolOp):
            parts = [self._bool(v, columns) for v in node.values]
            fn = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            out = parts[0]
            for p in parts[1:]:
                out = fn(out, p)
            return np.asarray(out)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return np.logical_not(self._bool(node.operand, columns))
        if isinstance(node, ast.Compare):
            return self._compare(node, columns)
        if isinstance(node, ast.Name) and _kind(np.asarray(columns[node.id])) == "bool":
            return np.asarray(columns[node.id])
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            return np.asarray(node.value)
        raise _refuse(
            self.text,
            self.option,
            f"{ast.unparse(node)!r} is not a yes/no value; compare it "
            f"(e.g. {ast.unparse(node)} > 0)",
        )

    def _compare(self, node: ast.Compare, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        out: np.ndarray = np.asarray(True)
        left = node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            a, b = self._value(left, columns), self._value(right, columns)
            self._check_types(left, a, right, b)
            if isinstance(op, ast.In | ast.NotIn):
                if not isinstance(b, list):
                    raise _refuse(
                        self.text,
                        self.option,
                        f"`in` needs a list of constants, e.g. "
                        f"{ast.unparse(left)} in ('good', 'mua')",
                    )
                r = np.isin(np.asarray(a, dtype=object if _is_text(a) else None), b)
                r = ~r if isinstance(op, ast.NotIn) else r
            else:
                with np.errstate(invalid="ignore"):
                    r = np.asarray(_COMPARE[type(op)](a, b))
            out = np.logical_and(out, r)
            left = right
        return out

    def _check_types(self, ln: ast.expr, a: Any, rn: ast.expr, b: Any) -> None:
        for node, x, other in ((ln, a, b), (rn, b, a)):
            if not isinstance(node, ast.Name):
                continue
            kind = _kind(np.asarray(x))
            others = other if isinstance(other, list) else [other]
            for o in others:
                if isinstance(o, np.ndarray):
                    continue
                text_const = isinstance(o, str)
                if (kind == "text") != text_const:
                    col = "text" if kind == "text" else "numbers"
                    hint = (
                        f"compare it with a quoted text, e.g. {node.id} == 'good'"
                        if kind == "text"
                        else f"compare it with a number, e.g. {node.id} > 0.9"
                    )
                    raise _refuse(
                        self.text,
                        self.option,
                        f"column {node.id!r} holds {col} but is compared with {o!r}; {hint}",
                    )


def _describe(node: ast.AST) -> str:
    """How a construct the filter does not allow reads in an error."""
    if isinstance(node, ast.Constant):
        return repr(node.value)
    if isinstance(node, ast.UnaryOp | ast.BinOp | ast.AugAssign):
        return _SYMBOL.get(type(node.op), type(node.op).__name__)
    return _SYMBOL.get(type(node), type(node).__name__)


def _is_text(x: Any) -> bool:
    return isinstance(x, np.ndarray) and _kind(x) == "text"


def allen_qc(columns: Sequence[str]) -> UnitFilter:
    """AllenSDK's default unit filter over a Units table with these columns.

    Raises:
        DataError: the table lacks one of AllenSDK's quality metrics.
    """
    need = ("amplitude_cutoff", "presence_ratio", "isi_violations")
    missing = [c for c in need if c not in columns]
    if missing:
        raise DataError(
            f"--allen-qc: the Units table has no column {missing[0]} (AllenSDK's quality "
            f"metrics are {', '.join(need)}); filter on the columns it has with --unit-filter "
            f"({_shown(sorted(columns)) or 'none'})"
        )
    text = ALLEN_QC_METRICS + (" and quality == 'good'" if "quality" in columns else "")
    return UnitFilter.parse(text, option="--allen-qc")


def region_mask(locations: np.ndarray, regions: Sequence[str], source: str) -> np.ndarray:
    """(N,) bool: the units whose location is one of ``regions`` (exact names).

    Args:
        locations: (N,) the location of each unit (text; '' where unknown).
        regions: the ``--region`` names.
        source: where the locations come from, for errors.

    Raises:
        DataError: no unit is in any of the regions (the regions there are are listed).
    """
    loc = np.asarray(locations, dtype=object)
    keep = np.isin(loc, list(regions))
    if not keep.any():
        names, counts = np.unique(loc.astype(str), return_counts=True)
        order = np.argsort(-counts, kind="stable")
        have = [f"{names[i] or '(none)'} ({counts[i]})" for i in order]
        raise DataError(
            f"--region {' '.join(regions)}: no unit is there (locations from {source}); the "
            f"units' regions: {_shown(have)}"
        )
    return keep


def invalid_scope(tags: Sequence[str], unit_probes: Sequence[frozenset[str]]) -> np.ndarray:
    """(N,) bool: the units an ``invalid_times`` interval with these tags applies to.

    Args:
        tags: the interval's tags (AllenSDK: ``[scope, scope_id, label]``).
        unit_probes: per unit, the names and ids of its probe (empty when unknown).
    """
    t = {str(x) for x in tags}
    n = len(unit_probes)
    if "optotagging" in t:
        return np.zeros(n, dtype=bool)
    if "EcephysProbe" in t:
        named = t - {"EcephysProbe"}
        return np.array([not p or bool(p & named) for p in unit_probes], dtype=bool)
    return np.ones(n, dtype=bool)
