"""Merge bench reports (JSON) into one file and one markdown table for ``benchmarks/NOTES.md``.

``python -m vivit_hpo.bench.summary DIR_OR_FILES... [--json OUT] [--markdown OUT]``

A compiled run that was timed without the reference beside it is compared with the eager
reference of the same config, input and batch from another report of the same set (the same
script run on the same machine); the table says which reference each ratio uses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from vivit_hpo._io import atomic_write_text

__all__ = ["load_reports", "markdown", "summary_rows"]


def load_reports(paths: list[Path]) -> list[dict[str, Any]]:
    """Read bench reports: files, and the ``*.json`` of folders (sorted by name)."""
    files: list[Path] = []
    for p in paths:
        files.extend(sorted(p.glob("*.json")) if p.is_dir() else [p])
    reports = []
    for f in files:
        data = json.loads(f.read_text())
        if isinstance(data, dict) and data.get("schema", "").startswith("vivit-hpo-bench/"):
            data["source"] = f.name
            reports.append(data)
    return reports


def _key(report: dict[str, Any], row: dict[str, Any]) -> tuple[Any, ...]:
    s = report["settings"]
    return (row["config"], tuple(s["input_size"]), row["ours"]["batch_size"], s["backend"])


def summary_rows(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per (report, config): ours, the reference of the same run and mode if it
    ran, else the eager reference of the same config/input/batch from the set."""
    eager_ref: dict[tuple[Any, ...], dict[str, Any]] = {}
    for rep in reports:
        for row in rep["results"]:
            if not rep["settings"]["compile"] and row["reference"] is not None:
                eager_ref[_key(rep, row)] = row["reference"]
    out = []
    for rep in reports:
        s = rep["settings"]
        for row in rep["results"]:
            ours, ref = row["ours"], row["reference"]
            eager = eager_ref.get(_key(rep, row))
            t, h, w = s["input_size"]
            out.append(
                {
                    "source": rep.get("source"),
                    "device": rep["environment"]["device_name"],
                    "date": rep["date"],
                    "config": row["config"],
                    "input": f"({ours['batch_size']}, 1, {t}, {h}, {w})",
                    "mode": "compiled" if s["compile"] else "eager",
                    "attention": ours.get("attention_backend"),
                    "ceiling_tflops": rep["ceiling"]["tflops"],
                    "ours_samples_per_s": ours["samples_per_s"],
                    "ours_tflops": ours["tflops"],
                    "ours_pct_of_ceiling": ours["pct_of_ceiling"],
                    "ours_peak_gib": ours["peak_memory_mb"] / 1024,
                    "ours_first_step_s": ours["first_step_s"],
                    "ref_samples_per_s": None if ref is None else ref["samples_per_s"],
                    "ref_peak_gib": None if ref is None else ref["peak_memory_mb"] / 1024,
                    "ref_eager_samples_per_s": None if eager is None else eager["samples_per_s"],
                    "ratio_vs_ref_eager": (
                        None if eager is None else ours["samples_per_s"] / eager["samples_per_s"]
                    ),
                    "ratio_vs_ref_same_mode": (
                        None if ref is None else ours["samples_per_s"] / ref["samples_per_s"]
                    ),
                }
            )
    # Input, then config, eager before compiled, then by source (backend pins last).
    out.sort(key=lambda r: (r["input"], r["config"], r["mode"] != "eager", r["source"] or ""))
    return out


def _f(x: float | None, fmt: str = "") -> str:
    """``-`` for a missing figure; else ``fmt``, or 3 significant digits under 100 and whole
    numbers with thousands separators above."""
    if x is None:
        return "-"
    if fmt:
        return format(x, fmt)
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def markdown(reports: list[dict[str, Any]]) -> str:
    """The NOTES.md table of a set of reports (one line per model, input and mode)."""
    head = (
        "| config | input (B,C,T,H,W) | mode | attention | ours samples/s | ref samples/s "
        "(same mode) | ours/ref (same mode) | ref eager samples/s | ours/ref eager | ours "
        "TFLOP/s | % of ceiling | ours peak GiB | ref peak GiB | first step s |\n"
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
        "---: | ---: |\n"
    )
    lines = []
    for r in summary_rows(reports):
        lines.append(
            f"| {Path(r['config']).stem} | {r['input']} | {r['mode']} | {r['attention']} | "
            f"{_f(r['ours_samples_per_s'])} | {_f(r['ref_samples_per_s'])} | "
            f"{_f(r['ratio_vs_ref_same_mode'], '.2f')} | "
            f"{_f(r['ref_eager_samples_per_s'])} | {_f(r['ratio_vs_ref_eager'], '.2f')} | "
            f"{_f(r['ours_tflops'])} | {_f(r['ours_pct_of_ceiling'], '.1f')} | "
            f"{_f(r['ours_peak_gib'], '.2f')} | {_f(r['ref_peak_gib'], '.2f')} | "
            f"{_f(r['ours_first_step_s'], '.1f')} |"
        )
    ceilings = sorted({f"{r['ceiling']['label']} {_f(r['ceiling']['tflops'])}" for r in reports})
    devices = sorted({r["environment"]["device_name"] for r in reports})
    foot = f"\nceiling (TFLOP/s, measured in each run): {'; '.join(ceilings)}; device: "
    foot += ", ".join(devices) + "\n"
    return head + "\n".join(lines) + "\n" + foot


def main(
    paths: Annotated[list[Path], typer.Argument(help="Report files or folders of them.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Merged reports.")] = None,
    markdown_out: Annotated[Path | None, typer.Option("--markdown", help="Table.")] = None,
) -> None:
    """Merge bench reports and print the markdown table."""
    reports = load_reports(paths)
    table = markdown(reports)
    if json_out is not None:
        merged = {"reports": reports, "rows": summary_rows(reports)}
        atomic_write_text(json_out, json.dumps(merged, indent=1))
    if markdown_out is not None:
        atomic_write_text(markdown_out, table)
    print(table)


if __name__ == "__main__":
    typer.run(main)
