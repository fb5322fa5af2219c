"""The table layer: a table fits the width it is printed at, dropping the lowest-priority
columns and wrapping text, with each header whole; and the number formatters."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterable

from rich.console import Console
from rich.table import Table

from vivit_hpo.cli._output import (
    Column,
    FitTable,
    compact,
    count,
    fixed,
    grouped,
    key_value_table,
    params,
    percent,
    seconds,
    sig,
    signed,
)

WIDTH = 80


def render(table: FitTable, width: int) -> str:
    out = Console(file=io.StringIO(), width=width, color_system=None)
    out.print(table)
    return out.file.getvalue()  # type: ignore[attr-defined]


def hidden_headers(output: str) -> set[str]:
    """The headers the captions name as hidden (a caption may wrap over lines)."""
    flat = " ".join(output.split())
    found = re.findall(r"columns? hidden at this width \((.*?)\); widen the terminal", flat)
    return {h for names in found for h in names.split(", ")}


def assert_readable(output: str, headers: Iterable[str] = (), width: int = WIDTH) -> None:
    """No line wider than ``width``, nothing cut short, and each of ``headers`` whole on a line
    (between spaces or the box's lines) or named as hidden."""
    lines = output.splitlines()
    assert max(len(line) for line in lines) <= width, output
    assert "…" not in output, output
    hidden = hidden_headers(output)
    headers = list(headers)
    assert hidden <= set(headers), (hidden, output)
    assert len(hidden) < len(headers) or not headers, output
    for h in headers:
        if h in hidden:
            continue
        whole = re.compile(rf"(?<![^\s┃│]){re.escape(h)}(?![^\s┃│])")
        assert any(whole.search(line) for line in lines), (h, output)


# The layer on its own.


def _trials_table() -> FitTable:
    table = FitTable(
        [
            Column("#", "right", priority=9),
            Column("state", priority=8),
            Column("val BPS", "right", priority=7),
            Column("epochs", "right", priority=2),
            Column("params", priority=5, wrap=True),
            Column("reason", priority=1, wrap=True),
        ],
        title="trials",
    )
    table.add_row("0", "COMPLETE", "+0.1234", "3", "lr=0.003 embed_dim=16 heads=2", "budget")
    table.add_row("1", "PRUNED", "-0.0100", "1", "lr=0.01 embed_dim=32 heads=4", "pruned at 1")
    return table


def test_a_table_that_fits_renders_as_the_rich_table_of_the_same_columns() -> None:
    rich_table = Table(title="trials")
    for col, justify in (("#", "right"), ("state", "left"), ("val BPS", "right")):
        rich_table.add_column(col, justify=justify)  # type: ignore[arg-type]
    fit = FitTable(
        [Column("#", "right"), Column("state"), Column("val BPS", "right")], title="trials"
    )
    for row in (("0", "COMPLETE", "+0.1234"), ("12", "PRUNED", "-")):
        rich_table.add_row(*row)
        fit.add_row(*row)
    out = Console(file=io.StringIO(), width=WIDTH, color_system=None)
    out.print(rich_table)
    assert render(fit, WIDTH) == out.file.getvalue()  # type: ignore[attr-defined]


def test_narrow_drops_the_lowest_priority_first_and_says_which() -> None:
    wide = render(_trials_table(), 120)
    assert not hidden_headers(wide) and "lr=0.003 embed_dim=16 heads=2" in wide
    narrow = render(_trials_table(), 44)
    assert hidden_headers(narrow) == {"reason", "epochs"}
    assert "2 columns hidden at this width" in " ".join(narrow.split())
    for width in range(24, 121):
        out = render(_trials_table(), width)
        assert_readable(out, ["#", "state", "val BPS", "epochs", "params", "reason"], width)
        assert not {"#", "state"} & hidden_headers(out), out  # the most important stay


def test_a_text_column_wraps_before_a_column_is_hidden() -> None:
    out = render(_trials_table(), 60)
    assert hidden_headers(out) == {"reason"}
    lines = out.splitlines()
    assert any("lr=0.003" in line and "heads=2" not in line for line in lines), out
    assert any("heads=2" in line and "lr=" not in line for line in lines), out  # wrapped
    assert max(len(line) for line in lines) <= 60


def test_key_value_tables_wrap_the_value() -> None:
    path = "/a/very/long/folder/" * 6 + "trial-0001"
    out = render(key_value_table("best trial", [("trial folder", path)]), 50)
    assert max(len(line) for line in out.splitlines()) <= 50
    assert "".join(re.sub(r"[│ ]", "", line) for line in out.splitlines()).count(path) == 1
    assert "trial folder" in out


def test_number_formatters() -> None:
    assert signed(0.123456) == "+0.1235" and signed(-0.5, 5) == "-0.50000"
    assert fixed(0.12345) == "0.123" and fixed(2.5, 0) == "2"
    assert sig(60.0, 6) == "60" and sig(1.234e9) == "1.23e+09"
    assert percent(0.4242) == "42%" and percent(0.4242, 1) == "42.4%"
    assert seconds(12.4) == "12 s" and count(3000) == "3000"
    assert grouped(1234567) == "1,234,567" and grouped(1234.6) == "1,235"
    assert compact(2.468) == "2.47" and compact(1234.6) == "1,235"
    assert params({"lr": 0.0031234, "embed_dim": 16}) == "lr=0.00312 embed_dim=16"
    for f in (signed, fixed, sig, percent, seconds, grouped, compact):
        assert f(None) == "-" and f(math.nan) == "-"
    assert count(None) == "-"
