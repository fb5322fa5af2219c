"""``vivit-hpo data``: make simulated sessions, import NWB recordings and Sensorium 2023 mice,
check session files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from vivit_hpo._output import Column, FitTable, count, fixed, key_value_table, sig
from vivit_hpo.cli._common import check_file_output, check_not_an_input, console, err_console
from vivit_hpo.config import DataConfig
from vivit_hpo.data import expand_paths, import_nwb, import_sensorium, inspect_file, synthesize
from vivit_hpo.data.sensorium import FRAME_RATE as SENSORIUM_RATE

group = typer.Typer(
    no_args_is_help=True, help="Session files: simulate some, import and check your own."
)

_DEFAULT_LAGS = DataConfig.model_validate({}).num_lags


@group.command("synth")
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the sessions into.")],
    sessions: Annotated[int, typer.Option("--sessions", min=1, help="Sessions K.")] = 1,
    neurons: Annotated[int, typer.Option("--neurons", min=1, help="Units N per session.")] = 96,
    frames: Annotated[
        int, typer.Option("--frames", min=1, help="Time bins T per session.")
    ] = 48000,
    size: Annotated[
        tuple[int, int], typer.Option("--size", help="Frame height and width (H W).")
    ] = (36, 36),
    frame_rate: Annotated[float, typer.Option("--frame-rate", help="Bins per second.")] = 60.0,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    num_lags: Annotated[
        int, typer.Option("--num-lags", min=1, help="L of the bins the oracle is scored on.")
    ] = _DEFAULT_LAGS,
) -> None:
    """Simulate a V1-like population (with known true rates) and write it as session files."""
    res = synthesize(
        out_dir,
        sessions=sessions,
        neurons=neurons,
        frames=frames,
        size=size,
        frame_rate=frame_rate,
        seed=seed,
        num_lags=num_lags,
    )
    table = FitTable(
        [
            Column("session", priority=9, wrap=True),
            Column("bins", priority=4),
            Column("units", priority=5),
            Column("frame", priority=3),
            Column("sp/s", priority=2),
            Column("train", "right", priority=6),
            Column("val", "right", priority=7),
            Column("test", "right", priority=8),
        ],
        title=f"oracle bits per spike (num_lags={res.num_lags})",
    )
    for path in res.files:
        name = path.stem
        o = res.oracle[name]
        table.add_row(
            name,
            count(frames),
            count(neurons),
            f"{size[0]}x{size[1]}",
            fixed(res.mean_rate_hz[name], 2),
            fixed(o["train"]),
            fixed(o["val"]),
            fixed(o["test"]),
        )
    console.print(table)
    console.print(
        f"wrote {len(res.files)} session(s) to {res.out_dir} (true rates in "
        f"{res.out_dir / 'truth'}, oracle in {res.out_dir / 'oracle.json'})"
    )


@group.command("inspect")
def inspect(
    paths: Annotated[list[Path], typer.Argument(help="Session files or folders of them.")],
    num_lags: Annotated[
        int, typer.Option("--num-lags", min=1, help="L, frames of history per sample.")
    ] = _DEFAULT_LAGS,
    min_size: Annotated[
        tuple[int, int] | None,
        typer.Option("--min-size", help="Smallest frame (H W) the model takes (one tubelet)."),
    ] = None,
) -> None:
    """Describe session files and list every way they break the data contract (exit 2 if any)."""
    cfg = DataConfig.model_validate({"num_lags": num_lags})
    files: list[Path] = []
    for p in paths:
        # A missing file is reported as a problem of its own; a folder is expanded.
        files.extend(expand_paths([p]) if p.is_dir() else [p])
    reports = [inspect_file(f, cfg, min_size=min_size) for f in files]

    # The response kind only where some file is not spike counts: a column of "spikes" says
    # nothing and costs an 80-column terminal its width.
    kinds = any(r.response_kind not in (None, "spikes") for r in reports)
    table = FitTable(
        [
            Column("file", priority=10, wrap=True),
            Column("session", priority=8, wrap=True),
            Column("bins", "right", priority=6),
            Column("units", "right", priority=7),
            *((Column("kind", "right", priority=4),) if kinds else ()),
            Column("frame", "right", priority=5, wrap=True, min_width=5),
            Column("K", "right", priority=1),
            Column("Hz", "right", priority=2),
            Column("rate/s", "right", priority=3),
            Column("blocks", "right", priority=2),
            Column("samples train/val/test", "right", priority=4, wrap=True),
            Column("problems", "right", priority=9),
        ],
        title=f"sessions (num_lags={num_lags})",
    )
    for r in reports:
        frame = f"{r.num_channels}x{r.height}x{r.width} {r.stim_dtype}" if r.height else "-"
        samples = "/".join(count(r.samples.get(s)) for s in ("train", "val", "test"))
        table.add_row(
            str(r.path),
            r.name or "-",
            count(r.num_bins),
            count(r.num_units),
            *((r.response_kind or "-",) if kinds else ()),
            frame,
            count(r.num_behavior),
            sig(r.frame_rate, 6),
            fixed(r.mean_rate_hz, 2),
            count(r.num_blocks),
            f"{samples} ({r.split_source})" if r.split_source else "-",
            "none" if not r.problems else f"[red]{len(r.problems)}[/red]",
        )
    console.print(table)
    problems = [line for r in reports for line in r.problems]
    if problems:
        for line in problems:
            err_console.print(line, markup=False, highlight=False, soft_wrap=True)
        err_console.print(
            f"{len(problems)} problem(s) in {sum(1 for r in reports if r.problems)} file(s)",
            markup=False,
        )
        raise typer.Exit(code=2)


@group.command("import-nwb")
def import_nwb_cmd(
    nwb_file: Annotated[Path, typer.Argument(help="The NWB file (HDF5) to import.")],
    out: Annotated[Path, typer.Option("--out", help="The session file to write (*.h5).")],
    stimulus: Annotated[
        str | None,
        typer.Option(
            "--stimulus",
            help="Name (or path) of the stimulus ImageSeries/OpticalSeries/IndexSeries; "
            "default: the file's only one.",
        ),
    ] = None,
    presentations: Annotated[
        list[str] | None,
        typer.Option(
            "--presentations",
            help="An intervals table whose rows each show one frame of a movie template "
            "(Allen: natural_movie_one_presentations), instead of --stimulus; repeatable.",
        ),
    ] = None,
    template: Annotated[
        list[str] | None,
        typer.Option(
            "--template",
            help="The movie those rows show: an ImageSeries of the file or a FILE.npy; one for "
            "all tables or one per table; default: by name in stimulus/templates.",
        ),
    ] = None,
    behavior: Annotated[
        list[str] | None,
        typer.Option(
            "--behavior",
            help="Behaviour to add: a TimeSeries, SERIES.FIELD (pupil_tracking.area) or "
            "TABLE.COLUMN (pupil_ellipse_fits.width); repeatable.",
        ),
    ] = None,
    blinks: Annotated[
        str | None,
        typer.Option(
            "--blinks",
            help="A yes/no blink series (likely_blink): its bins are invalid in dfs.",
        ),
    ] = None,
    unit_filter: Annotated[
        str | None,
        typer.Option(
            "--unit-filter",
            help="Keep the units meeting this expression over the Units table's columns, "
            "e.g. \"quality == 'good' and presence_ratio > 0.9\".",
        ),
    ] = None,
    allen_qc: Annotated[
        bool,
        typer.Option("--allen-qc", help="Keep the units passing AllenSDK's default QC."),
    ] = False,
    region: Annotated[
        list[str] | None,
        typer.Option(
            "--region", help="Keep the units whose peak channel is in this location; repeatable."
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Session name (default: the --out file's stem).")
    ] = None,
    frame_rate: Annotated[
        float | None,
        typer.Option(
            "--frame-rate",
            help="Resample to bins of this rate (Hz), e.g. to match other sessions; default: "
            "one bin per frame.",
        ),
    ] = None,
) -> None:
    """Convert an NWB recording (stimulus movie, Units, behaviour) into a session file."""
    check_not_an_input(out, [("NWB file", nwb_file)])
    check_file_output(out, replace=True)
    res = import_nwb(
        nwb_file,
        out,
        stimulus=stimulus,
        presentations=presentations or (),
        templates=template or (),
        behavior=behavior or (),
        blinks=blinks,
        unit_filter=unit_filter,
        allen_qc=allen_qc,
        regions=region or (),
        name=name,
        frame_rate=frame_rate,
    )
    shape = "x".join(str(x) for x in res.frame_shape)
    timing = "regular" if res.regular else "irregular: 1 / median interval"
    rows = [
        ("session", f"{res.name} -> {res.out}"),
        ("stimulus", res.stimulus),
        ("bins", f"{res.num_bins} of {shape} {res.stim_dtype}"),
        ("frame_rate", f"{res.frame_rate:.6g} Hz ({timing})"),
        ("units", f"{res.num_units} ({res.silent_units} without a spike in the bins)"),
        ("valid (dfs)", f"{100 * res.valid_fraction:.1f}%"),
        ("behavior", ", ".join(res.behavior_names) or "-"),
        ("blocks", f"{res.num_blocks} (from {res.block_source})"),
    ]
    if res.unit_selection != "all":
        rows.insert(
            4, ("selected", f"{res.num_units} of {res.units_in_file} ({res.unit_selection})")
        )
    if res.num_repeats:
        rows.append(("repeats", f"{res.num_repeats} ({res.grey_bins} grey bins)"))
    if res.invalid_intervals or res.blink_bins:
        rows.append(
            (
                "invalid",
                f"{res.invalid_intervals} invalid_times interval(s), {res.blink_bins} blink bins",
            )
        )
    console.print(key_value_table(f"imported {nwb_file.name}", rows))
    console.print(f"wrote {res.out}; check it with `vivit-hpo data inspect {res.out}`")


@group.command("import-sensorium")
def import_sensorium_cmd(
    folder: Annotated[
        Path, typer.Argument(help="One mouse's folder of Sensorium 2023 (holds data/ and meta/).")
    ],
    out: Annotated[Path, typer.Option("--out", help="The session file to write (*.h5).")],
    frame_rate: Annotated[
        float,
        typer.Option(
            "--frame-rate", help="Frames per second (the file's frame_rate; no resampling)."
        ),
    ] = SENSORIUM_RATE,
    name: Annotated[
        str | None, typer.Option("--name", help="Session name (default: the --out file's stem).")
    ] = None,
) -> None:
    """Convert one Sensorium 2023 mouse (per-trial .npy files) into a session file."""
    check_not_an_input(out, [("mouse folder", folder)])
    check_file_output(out, replace=True)
    with Progress(
        TextColumn("[bold]trials"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,  # a log or a pipe gets the summary alone
    ) as bar:
        task = bar.add_task("import", total=None)

        def on_trial(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        res = import_sensorium(folder, out, frame_rate=frame_rate, name=name, on_trial=on_trial)

    def tiers(counts: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"

    rows = [
        ("session", f"{res.name} -> {res.out}"),
        ("bins", f"{res.num_bins} of {res.frame_shape[0]}x{res.frame_shape[1]} {res.stim_dtype}"),
        ("frame_rate", f"{res.frame_rate:g} Hz"),
        ("units", f"{res.num_units} (response_kind calcium)"),
        ("trials", f"{res.num_trials}, one block each: {tiers(res.kept)}"),
        ("split (bins)", " / ".join(f"{s} {n}" for s, n in res.bins.items())),
        (
            "left out",
            f"{sum(res.withheld.values())} withheld (responses all NaN): "
            f"{tiers(res.withheld)}; {res.empty} starting with a NaN frame",
        ),
        ("cropped", f"{res.padding} NaN padding frames; {res.cut} trial(s) cut at a NaN inside"),
        ("negative", f"{res.negative} responses below 0 set to 0 (lowest {res.most_negative:.3g})"),
        ("behavior", ", ".join(res.behavior_names)),
    ]
    console.print(key_value_table(f"imported {folder.name}", rows))
    console.print(f"wrote {res.out}; check it with `vivit-hpo data inspect {res.out}`")
