"""The one table and number layer of the command line.

Every table a command prints is a :class:`FitTable`: columns with a priority, rendered to the
width of the terminal at print time. At any width each header shows whole and each number on
one line; when the columns do not fit, the lowest-priority ones are left out (a caption names
them) and text columns wrap. The number formatters below are the only ones the tables use, so
that a score, a fraction or a duration reads the same in every command; each prints a missing
value (None or NaN) as ``-``.

The module needs rich alone, so the benchmarks and the live view of a run
(:mod:`vivit_hpo._live`) print through it without importing the command groups.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rich import box as boxes
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.measure import Measurement
from rich.padding import Padding, PaddingDimensions
from rich.table import Table

__all__ = [
    "MISSING",
    "Column",
    "FitTable",
    "compact",
    "count",
    "fixed",
    "grouped",
    "key_value_table",
    "params",
    "percent",
    "seconds",
    "sig",
    "signed",
]

MISSING = "-"

# The narrowest a wrapping column is made (unless its header or its widest cell is narrower):
# below it a path or a sentence folds into a column of fragments.
_WRAP_MIN = 12


@dataclass(frozen=True)
class Column:
    """One column of a :class:`FitTable`.

    Attributes:
        header: its header, shown whole at every width (never cut or wrapped).
        justify: ``right`` for numbers.
        priority: which columns stay when the table is too wide: the lowest go first (the
            rightmost of equals first).
        wrap: its cells may wrap over several lines (text); otherwise each shows whole on one
            line.
        min_width: the narrowest a wrapping column is made (default 12, or its widest cell).
    """

    header: str
    justify: Literal["left", "right", "center"] = "left"
    priority: int = 0
    wrap: bool = False
    min_width: int | None = None


class FitTable:
    """A table that fits the console it is printed on (see the module docstring).

    Print it with ``console.print(table)`` or put it in a ``Group`` or a ``Live``: the columns
    are fitted each time it is rendered, to the width it is given then.

    Args:
        columns: the columns, left to right.
        title: the line above the table.
        caption: the line below it (the note on hidden columns follows it).
        title_justify: where the title goes.
        box: the rich box style (None: no lines).
        padding: the cells' padding, as rich takes it.
        show_header: whether the headers show (a key-value table has none).
    """

    def __init__(
        self,
        columns: Sequence[Column],
        *,
        title: str | None = None,
        caption: str | None = None,
        title_justify: Literal["left", "right", "center"] = "center",
        box: boxes.Box | None = boxes.HEAVY_HEAD,
        padding: PaddingDimensions = (0, 1),
        show_header: bool = True,
    ) -> None:
        self.columns = list(columns)
        self.title = title
        self.caption = caption
        self.title_justify = title_justify
        self.box = box
        self.padding = padding
        self.show_header = show_header
        self.rows: list[tuple[RenderableType, ...]] = []

    def add_row(self, *cells: RenderableType) -> None:
        """Add a row: one cell per column (a string may hold rich markup)."""
        assert len(cells) == len(self.columns), (len(cells), len(self.columns))
        self.rows.append(cells)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self._fit(console, options.max_width)

    def _fit(self, console: Console, width: int) -> Table:
        """The rich table of the columns that fit ``width`` cells, each at its fitted width."""
        options = console.options.update_width(width)
        floors, words, widest = [], [], []
        for i, col in enumerate(self.columns):
            header = _measure(console, options, col.header) if self.show_header else None
            cells = [_measure(console, options, row[i]) for row in self.rows]
            top = max([m.maximum for m in cells] + ([header.maximum] if header else [0]))
            head = header.maximum if header else 0
            if col.wrap:
                floor = max(head, min(col.min_width or _WRAP_MIN, top))
                longest_word = max((m.minimum for m in cells), default=0)
                words.append(max(floor, min(longest_word, top)))
            else:
                floor = top
                words.append(top)
            floors.append(floor)
            widest.append(top)

        left, right = _side_padding(self.padding)

        def overhead(n: int) -> int:
            # The cells' padding, and a box's two edges and n - 1 lines between the columns.
            return n * (left + right) + (0 if self.box is None else n + 1)

        def fits(columns: list[int]) -> bool:
            return sum(floors[i] for i in columns) + overhead(len(columns)) <= width

        # Drop the lowest priority first (the rightmost of equals), then take back any dropped
        # column narrow enough for the room left, the most important first.
        shown = list(range(len(self.columns)))
        dropped: list[int] = []
        while len(shown) > 1 and not fits(shown):
            dropped.append(min(shown, key=lambda i: (self.columns[i].priority, -i)))
            shown.remove(dropped[-1])
        for i in reversed(dropped):
            if fits(sorted([*shown, i])):
                shown = sorted([*shown, i])

        # Every column at its floor, then (the most important first) each wrapping column up
        # to its longest word, then every column up to its widest cell.
        room = width - overhead(len(shown))
        widths = {i: floors[i] for i in shown}
        by_priority = sorted(shown, key=lambda i: (-self.columns[i].priority, i))
        for target in (words, widest):
            for i in by_priority:
                spare = room - sum(widths.values())
                widths[i] += max(0, min(spare, target[i] - widths[i]))

        hidden = [self.columns[i].header for i in range(len(self.columns)) if i not in shown]
        caption = self.caption
        if hidden:
            note = (
                f"{len(hidden)} column{'s' if len(hidden) > 1 else ''} hidden at this width "
                f"({', '.join(hidden)}); widen the terminal"
            )
            caption = note if caption is None else f"{caption}\n{note}"
        table = Table(
            title=self.title,
            caption=caption,
            title_justify=self.title_justify,
            box=self.box,
            padding=self.padding,
            show_header=self.show_header,
        )
        for i in shown:
            col = self.columns[i]
            table.add_column(
                col.header,
                justify=col.justify,
                width=widths[i],
                no_wrap=not col.wrap,
                overflow="fold" if col.wrap else "ellipsis",
            )
        for row in self.rows:
            table.add_row(*(row[i] for i in shown))
        return table


def key_value_table(title: str, rows: Iterable[tuple[str, RenderableType]]) -> FitTable:
    """A headerless two-column table of a thing's facts: the keys whole, the values wrapped."""
    table = FitTable(
        [Column("key", priority=1), Column("value", priority=1, wrap=True)],
        title=title,
        show_header=False,
    )
    for key, value in rows:
        table.add_row(key, value)
    return table


def _measure(console: Console, options: ConsoleOptions, cell: RenderableType) -> Measurement:
    renderable = console.render_str(cell) if isinstance(cell, str) else cell
    return Measurement.get(console, options, renderable)


def _side_padding(padding: PaddingDimensions) -> tuple[int, int]:
    _, right, _, left = Padding.unpack(padding)
    return left, right


def _missing(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def signed(x: float | None, places: int = 4) -> str:
    """A score with its sign, ``+0.1234``: bits per spike, a correlation, a gain."""
    return MISSING if _missing(x) else f"{x:+.{places}f}"


def fixed(x: float | None, places: int = 3) -> str:
    """A number with ``places`` decimals, no sign: ``0.123``."""
    return MISSING if _missing(x) else f"{x:.{places}f}"


def sig(x: float | None, digits: int = 3) -> str:
    """A number to ``digits`` significant figures: ``1.23e+09``, ``60``."""
    return MISSING if _missing(x) else f"{x:.{digits}g}"


def percent(fraction: float | None, places: int = 0) -> str:
    """A fraction as a percentage: ``0.42`` is ``42%``."""
    return MISSING if _missing(fraction) else f"{fraction:.{places}%}"


def seconds(x: float | None) -> str:
    """A duration in whole seconds: ``12 s``."""
    return MISSING if _missing(x) else f"{x:.0f} s"


def count(n: int | None) -> str:
    """A count as it is: ``3000`` (bins, units, trials)."""
    return MISSING if n is None else str(n)


def grouped(x: float | None) -> str:
    """A large number whole, in groups of thousands: ``12,345`` (parameters, samples/s)."""
    return MISSING if _missing(x) else f"{x:,.0f}"


def compact(x: float | None) -> str:
    """Three significant figures below 100, whole and grouped above: ``2.47``, ``1,234``."""
    if x is None or math.isnan(x):
        return MISSING
    return grouped(x) if x >= 100 else sig(x, 3)


def params(values: Mapping[str, Any]) -> str:
    """Hyperparameters as ``name=value`` pairs, floats to three significant figures."""
    return " ".join(f"{k}={sig(v) if isinstance(v, float) else v}" for k, v in values.items())
