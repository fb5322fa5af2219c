"""``vivit-hpo train``, ``evaluate`` and ``predict``: one model, trained, scored and used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from vivit_hpo._io import atomic_path, atomic_write_text
from vivit_hpo._output import MISSING, Column, FitTable, fixed, percent, signed
from vivit_hpo.cli._common import (
    DataPaths,
    Device,
    Overrides,
    check_file_output,
    check_not_an_input,
    console,
)
from vivit_hpo.config import load_run_config
from vivit_hpo.data import SessionSet
from vivit_hpo.errors import ConfigError, OutputPathError
from vivit_hpo.metrics import GAIN_LABEL, leads_with_corr, mean_over_sessions, score_label
from vivit_hpo.training import EpochReport, Trainer, load_run, predict, resolve_device
from vivit_hpo.training.run import SUMMARY_FILE, load_run_sessions, oracle_scores, train_run


def _score_table(
    title: str,
    scores: dict[str, float],
    oracle: dict[str, float],
    *,
    label: str = "BPS",
    corr: dict[str, float] | None = None,
) -> FitTable:
    """Per-session Poisson scores (named ``label``), led by the correlation when ``corr`` is
    given (calcium sessions), with the oracle where the data is simulated."""
    columns = [
        Column("session", priority=9, wrap=True),
        *((Column("r", "right", priority=8),) if corr is not None else ()),
        Column(label, "right", priority=7),
        *(
            (Column("oracle", "right", priority=5), Column("fraction", "right", priority=6))
            if oracle
            else ()
        ),
    ]
    table = FitTable(columns, title=title)
    for name, bps in scores.items():
        row = [name] + ([fixed(corr[name], 4)] if corr is not None else []) + [fixed(bps, 4)]
        if oracle:
            o = oracle.get(name)
            row += [fixed(o, 4), percent(bps / o, 1)] if o else [MISSING, MISSING]
        table.add_row(*row)
    return table


def train(
    data: DataPaths,
    out: Annotated[Path, typer.Option("--out", help="Run directory (resumes if it holds a run).")],
    model: Annotated[
        Path | None, typer.Option("--model", help="Run config YAML (model, data, train).")
    ] = None,
    overrides: Overrides = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Epoch budget.")] = None,
    device: Device = "auto",
) -> None:
    """Train one encoding model and write RUN_DIR/metrics.json with every epoch's report."""
    sets = list(overrides or []) + ([f"train.epochs={epochs}"] if epochs else [])
    cfg = load_run_config(model, sets)
    dev = resolve_device(device)
    sessions = load_run_sessions(data, cfg)
    # Calcium traces: the correlation leads, and the Poisson score is no bits per spike.
    kinds = [m.response_kind for m in sessions.metas]
    corr_first = leads_with_corr(kinds)
    label = score_label(kinds, short=True)
    with Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("train", total=None, epoch=1, status="")

        def on_step(i: int, n: int) -> None:
            bar.update(task, completed=i, total=n)

        def on_start(trainer: Trainer) -> None:
            if trainer.epoch:
                console.print(f"resuming {out} after epoch {trainer.epoch}")
            console.print(
                f"training on {dev}: {sum(p.numel() for p in trainer.model.parameters()):,} "
                f"parameters, {len(sessions.metas)} session(s), {trainer.clips.describe()}, "
                f"{trainer.batches_per_epoch} batches per epoch"
            )

        def on_epoch(r: EpochReport) -> None:
            bar.update(task, epoch=r.epoch + 1, completed=0)
            shown = (
                f"val r {r.val_corr:.3f}  {label} {r.val_bps:+.4f}  pooled {r.val_pooled_bps:+.4f}"
                if corr_first
                else f"val BPS {r.val_bps:+.4f}  pooled {r.val_pooled_bps:+.4f}  r {r.val_corr:.3f}"
            )
            console.print(
                f"epoch {r.epoch:3d}  loss {r.train_loss:.4f}  {shown}  "
                f"{r.bins_per_s:,.0f} bins/s ({r.samples_per_s:,.0f} clips/s)  {r.seconds:.1f} s"
                + ("  *" if r.is_best else "")
            )

        run = train_run(
            cfg,
            sessions,
            out,
            device=dev,
            paths=data,
            on_step=on_step,
            on_start=on_start,
            on_epoch=on_epoch,
        )
    if run.stopped_early:
        console.print(
            f"stopped early: no better validation {label} in the last "
            f"{cfg.train.early_stopping_patience} epochs"
        )
    splits, scores, oracles = list(run.scores), run.scores, run.oracles
    # The test split outranks validation (it is the held-out score), the scores their oracle.
    rank = {"test": 2, "val": 0}
    columns = [Column("session", priority=9, wrap=True)]
    for s in splits:
        if corr_first:
            columns.append(Column(f"{s} r", "right", priority=6 + rank[s]))
        columns.append(Column(f"{s} {label}", "right", priority=5 + rank[s]))
    if any(oracles.values()):
        columns += [Column(f"{s} / oracle", "right", priority=3 + rank[s]) for s in splits]
    table = FitTable(columns, title=f"{out}: best epoch {run.best_epoch}")
    for name in sessions.names:
        row = [name]
        for s in splits:
            score = scores[s][name]
            row += ([fixed(score.corr, 4)] if corr_first else []) + [signed(score.bps)]
        if any(oracles.values()):
            row += [
                percent(scores[s][name].bps / oracles[s][name], 1)
                if name in oracles[s]
                else MISSING
                for s in splits
            ]
        table.add_row(*row)
    console.print(table)
    console.print(f"wrote {out / 'metrics.json'} and {out / SUMMARY_FILE}")


def evaluate_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `vivit-hpo train`.")],
    data: DataPaths,
    out: Annotated[Path, typer.Option("--out", help="Folder for <session>.npz and summary.json.")],
    split: Annotated[str, typer.Option("--split", help="val or test.")] = "test",
    device: Device = "auto",
) -> None:
    """Predict every sample of a split with the run's best checkpoint and score it."""
    if split not in ("val", "test"):
        raise ConfigError(f"--split {split!r}: expected val or test")
    # --out RUN_DIR would replace train's own summary.json with this one.
    inputs = [("run directory", run_dir), *(("--data path", p) for p in data)]
    check_not_an_input(out, inputs, fix=f"pass another folder, e.g. --out {run_dir / split}")
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"--out {out}: is a file; pass a folder for the predictions")
    dev = resolve_device(device)
    cfg, model, metas = load_run(run_dir, dev)
    sessions = load_run_sessions(data, cfg)
    known = {m.name: m for m in metas}
    for meta in sessions.metas:
        trained = known.get(meta.name)
        if trained is None:
            raise ConfigError(
                f"session {meta.name!r} has no readout in {run_dir} (trained on: "
                f"{', '.join(known)}); evaluate on the sessions the run was trained on"
            )
        if trained.num_units != meta.num_units:
            raise ConfigError(
                f"session {meta.name!r} has {meta.num_units} units but the run was trained on "
                f"{trained.num_units}; pass the same recording"
            )
    if not sessions.num_samples(split):
        raise ConfigError(f"no {split} samples in the given sessions; check their `split`")
    sessions = sessions.standardised_as(metas)  # the stimulus statistics it was trained with
    preds = predict(model, sessions, split, cfg.train.batch_size)
    out.mkdir(parents=True, exist_ok=True)
    for name, p in preds.items():
        path = out / f"{name}.npz"
        with atomic_path(path, suffix=".npz") as tmp:  # np.savez adds .npz to other names
            np.savez(
                tmp,
                rates=p.rates,
                bins=p.bins,
                bps=p.score.bps_per_unit,
                corr=p.score.corr_per_unit,
            )
    per_session = {n: p.score.bps for n, p in preds.items()}
    # Sessions without a valid spike in the split are left out of the mean (and named).
    mean = mean_over_sessions({n: p.score for n, p in preds.items()})
    kinds = {m.name: m.response_kind for m in sessions.metas}
    corr_first = leads_with_corr(kinds.values())
    corr = {n: p.score.corr for n, p in preds.items()}
    summary = {
        "run_dir": str(run_dir),
        "split": split,
        "mode": model.clips.describe(),
        "response_kinds": kinds,
        # `bps`: the Poisson score whatever the response kind (bits per spike for spikes).
        "bps": mean.bps,
        "corr": mean.corr,
        "corr_per_session": corr,
        "sessions_without_spikes": list(mean.without_spikes),
        "bps_per_session": per_session,
        "pooled_bps_per_session": {n: p.score.pooled_bps for n, p in preds.items()},
        "units_excluded": {n: p.score.num_excluded for n, p in preds.items()},
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    oracle = oracle_scores(data, split, cfg)
    if corr_first:
        title = f"{split} correlation and {GAIN_LABEL}"
        console.print(_score_table(title, per_session, oracle, label=GAIN_LABEL, corr=corr))
        console.print(f"mean {split} r {mean.corr:.4f}, {GAIN_LABEL} {mean.bps:+.4f}; wrote {out}")
    else:
        console.print(_score_table(f"{split} bits per spike", per_session, oracle))
        console.print(f"mean {split} BPS {mean.bps:+.4f}; wrote {out}")


def predict_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `vivit-hpo train`.")],
    stim: Annotated[
        Path,
        typer.Option("--stim", help="HDF5 file with `stim` (and optionally `behavior`, `blocks`)."),
    ],
    out: Annotated[Path, typer.Option("--out", help="HDF5 file of predicted rates to write.")],
    session: Annotated[
        str | None,
        typer.Option("--session", help="Whose units to predict (default: the run's only one)."),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Clips per batch.")
    ] = None,
    device: Device = "auto",
) -> None:
    """Predict a session's rates for a new stimulus (a movie with no recorded spikes)."""
    import h5py

    from vivit_hpo.data.stimulus import PREDICT_SPLIT, load_stimulus

    check_not_an_input(out, [("--stim file", stim)])
    check_file_output(out, replace=True)  # a file of rates, rewritten on purpose
    dev = resolve_device(device)
    cfg, model, metas = load_run(run_dir, dev)
    by_name = {m.name: m for m in metas}
    if session is None:
        if len(metas) > 1:
            raise ConfigError(
                f"{run_dir} reads out {len(metas)} sessions ({', '.join(by_name)}); pick one "
                "with --session NAME"
            )
        session = metas[0].name
    if session not in by_name:
        raise ConfigError(
            f"--session {session!r}: not a session of {run_dir} (it has {', '.join(by_name)})"
        )
    meta = by_name[session]
    data = SessionSet([load_stimulus(stim, meta)], cfg.data.num_lags, center=cfg.data.center)
    with h5py.File(stim, "r") as f:
        behavior = "given" if meta.num_behavior and "behavior" in f else "mean"
    if not data.num_samples(PREDICT_SPLIT):
        raise ConfigError(
            f"{stim}: no frame has {cfg.data.num_lags} frames of history in its block; give "
            "longer blocks (or none)"
        )
    preds = predict(model, data, PREDICT_SPLIT, batch_size or cfg.train.batch_size)
    p = preds[session]
    num_bins = data.session(session).num_bins
    rates = np.full((num_bins, meta.num_units), np.nan, dtype=np.float32)
    rates[p.bins] = p.rates
    predicted = np.zeros(num_bins, dtype=bool)
    predicted[p.bins] = True
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("rates", data=rates, compression="gzip")
        f.create_dataset("predicted", data=predicted)
        f.attrs.update(
            {
                "run_dir": str(run_dir),
                "session": session,
                "stim": str(stim),
                "num_lags": cfg.data.num_lags,
                "frame_rate": meta.frame_rate,
                "units": "spikes per bin"
                if meta.response_kind == "spikes"
                else "calcium response per bin",
                "behavior": behavior if meta.num_behavior else "none",
            }
        )
    console.print(
        f"predicted {int(predicted.sum()):,} of {num_bins:,} bins for {meta.num_units} units of "
        f"session {session!r} ({'; '.join([model.clips.describe(), str(dev)])}); wrote {out}"
    )
