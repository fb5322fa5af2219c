"""Public layouts (issue 19): one simulated population through each importer, same model.

    python benchmarks/layouts.py --neurons 16 --frames 6000 --size 18 18 --epochs 4 \
        --steps-per-epoch 40 --json layouts.json

A population is simulated once (:func:`vivit_hpo.data.simulate.simulate_session`, 30 Hz, so the
Sensorium layout's fixed 30 Hz holds) and written three ways:

- **native**: the project's own session file (``stim``, ``robs``, ``dfs``, ``behavior``,
  ``blocks``, ``split``);
- **allen**: an NWB file in the Allen Brain Observatory / OpenScope layout, written with pynwb
  (the helpers of ``tests/data/allen_nwb.py``): the movie an untimed template in
  ``stimulus/templates``, a ``<movie>_presentations`` TimeIntervals table with one row per shown
  frame (``start_time``, ``stop_time``, ``frame``, ``stimulus_block`` = the simulated block, a
  grey gap of ``--gap-s`` between blocks, where no row is), a Units table whose spike times put
  each bin's simulated count inside that row's interval, and each behaviour channel a
  TimeSeries stamped at the bins' centres; imported with :func:`vivit_hpo.data.nwb.import_nwb`
  (``--presentations``/``--template``);
- **sensorium**: a Sensorium 2023 mouse folder written with numpy (the layout of
  ``tests/data/sensorium_helpers.py``): one trial per simulated block, NaN-padded to the longest,
  its tier from the block's split (train, oracle, live_test_main); imported with
  :func:`vivit_hpo.data.sensorium.import_sensorium`. Sensorium's responses are calcium
  (``response_kind`` = ``calcium``): the simulated *counts* are written as the responses, so the
  Poisson score computed on them is the same number as the native file's bits per spike.

So that the three are scored on the same bins, with the same inputs:

- ``dfs`` is all ones in every file (the Sensorium layout has no per-unit validity mask: a NaN
  response cuts the trial), where the simulator marks blinks and isolation losses;
- the behaviour is written in Sensorium's channel order and names (pupil_dilation,
  running_speed, pupil_center_x, pupil_center_y = the simulator's pupil, run_speed, eye_x,
  eye_y), in all three;
- the split is whole simulated blocks (checked; else tiers are drawn per block and the native
  split set to match); Sensorium's comes from the tiers; the Allen importer writes no split, so
  the native split is copied onto the imported Allen file once its bins are checked to align one
  to one (the output says so).

Each file is then trained by the project's Trainer with the same run config (``--model``,
default ``configs/vivit_cpu.yaml``) for the same ``--epochs`` x ``--steps-per-epoch`` optimizer
steps (no early stopping, equal in steps, not in wall time), its best epoch scored on the test
split. The table: layout, test BPS, its ratio to native, the fraction of the oracle (the true
rates' test BPS on the same bins); ``--json`` writes the rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FRAME_RATE = 30.0  # Sensorium 2023's rate, and the simulation's
MOVIE = "natural_movie_one"
# Sensorium's behaviour channels, and which simulated channel (run_speed, pupil, eye_x, eye_y)
# each one carries.
CHANNELS = ("pupil_dilation", "running_speed", "pupil_center_x", "pupil_center_y")
FROM_SIM = (1, 0, 2, 3)
TIERS = ("train", "oracle", "live_test_main")  # split code 0, 1, 2
T0 = 10.0  # the first row's start on the NWB clock, seconds


def _test_helpers() -> None:
    """Put tests/data on the path: the NWB writers live beside the import tests."""
    where = str(ROOT / "tests" / "data")
    if where not in sys.path:
        sys.path.insert(0, where)


@dataclass(frozen=True)
class Population:
    """The simulated population as all three layouts write it."""

    stim: np.ndarray  # (T, H, W) uint8
    robs: np.ndarray  # (T, N) uint8 counts
    behavior: np.ndarray  # (T, 4) float32, in CHANNELS order
    blocks: np.ndarray  # (T,) int32, 0, 1, ... contiguous
    split: np.ndarray  # (T,) uint8, one value per block
    rates: np.ndarray  # (T, N) float32 true rates
    split_note: str


def simulate(neurons: int, frames: int, size: tuple[int, int], seed: int) -> Population:
    """Simulate once; the split made whole blocks (it is already, when the blocks are many)."""
    from vivit_hpo.data.simulate import simulate_session

    s = simulate_session(
        "layouts", neurons=neurons, frames=frames, size=size, frame_rate=FRAME_RATE, seed=seed
    )
    blocks = s.blocks.astype(np.int32)
    split = s.split.astype(np.uint8)
    per_block = all(np.unique(split[blocks == b]).size == 1 for b in np.unique(blocks))
    note = "the simulator's split (whole blocks)"
    if not per_block:
        # Few blocks: the simulator's split cut them into chunks. Draw tiers per block instead.
        ids = np.unique(blocks)
        rng = np.random.default_rng(seed)
        codes = rng.choice(3, ids.size, p=[0.7, 0.15, 0.15]).astype(np.uint8)
        codes[:3] = [0, 1, 2]
        split = codes[np.searchsorted(ids, blocks)]
        note = "a per-block split drawn here (the simulator's cut blocks into chunks)"
    return Population(
        stim=s.stim,
        robs=s.robs,
        behavior=np.ascontiguousarray(s.behavior[:, list(FROM_SIM)], dtype=np.float32),
        blocks=blocks,
        split=split,
        rates=s.rates,
        split_note=note,
    )


def write_native(pop: Population, path: Path) -> Path:
    """The project's own session file."""
    with h5py.File(path, "w") as f:
        f.create_dataset("stim", data=pop.stim)
        f.create_dataset("robs", data=pop.robs)
        f.create_dataset("dfs", data=np.ones(pop.robs.shape, np.uint8))
        f.create_dataset("behavior", data=pop.behavior)
        f.attrs["behavior_names"] = list(CHANNELS)
        f.create_dataset("blocks", data=pop.blocks)
        f.create_dataset("split", data=pop.split)
        f.attrs["frame_rate"] = FRAME_RATE
        f.attrs["name"] = "native"
    return path


def row_times(blocks: np.ndarray, gap_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(start, stop) of each bin's presentation row: back to back at 30 Hz inside a block, a
    grey gap of ``gap_s`` (no row) before each new block."""
    new = np.r_[False, blocks[1:] != blocks[:-1]]
    start = T0 + np.arange(blocks.size) / FRAME_RATE + gap_s * np.cumsum(new)
    return start, start + 1.0 / FRAME_RATE


def write_allen(pop: Population, path: Path, *, gap_s: float = 0.5) -> Path:
    """The population as an Allen / OpenScope NWB file (module docstring)."""
    _test_helpers()
    from allen_nwb import Rows, _presentations
    from nwb_helpers import new_nwb, write_nwb
    from pynwb import ProcessingModule, TimeSeries
    from pynwb.image import ImageSeries

    t = pop.stim.shape[0]
    nwb = new_nwb("layouts-allen")
    nwb.add_stimulus_template(
        ImageSeries(
            name=MOVIE,
            data=pop.stim,
            unit="NA",
            format="raw",
            timestamps=np.full(t, np.nan),  # untimed: the presentation rows show it
        )
    )
    start, stop = row_times(pop.blocks, gap_s)
    rows = Rows(
        f"{MOVIE}_presentations",
        start,
        stop,
        np.arange(t, dtype=np.float64),
        pop.blocks.astype(np.float64),
    )
    stim_mod = ProcessingModule(name="stimulus", description="Stimulus Times processing")
    nwb.add_processing_module(stim_mod)
    stim_ts = TimeSeries(name="timestamps", data=start, timestamps=start, unit="s")
    stim_mod.add(stim_ts)
    nwb.add_time_intervals(_presentations(rows, stim_ts))

    # Spike times: a bin's c spikes evenly inside its row's interval, away from its edges.
    width = stop - start
    for n in range(pop.robs.shape[1]):
        c = pop.robs[:, n].astype(np.int64)
        rows_of = np.repeat(np.arange(t), c)
        k = np.arange(rows_of.size) - np.repeat(np.cumsum(c) - c, c)  # 0..c-1 inside a bin
        spikes = start[rows_of] + width[rows_of] * (k + 1) / (c[rows_of] + 1)
        nwb.add_unit(id=1000 + n, spike_times=spikes)

    beh = ProcessingModule(name="behavior", description="behaviour, one sample per bin")
    nwb.add_processing_module(beh)
    centre = (start + stop) / 2  # one sample inside each bin, at its centre: read back exactly
    for k, name in enumerate(CHANNELS):
        beh.add(
            TimeSeries(
                name=name,
                data=pop.behavior[:, k].astype(np.float64),
                timestamps=centre,
                unit="a.u.",
            )
        )
    write_nwb(nwb, path)
    return path


def write_sensorium(pop: Population, folder: Path) -> Path:
    """The population as a Sensorium 2023 mouse folder (module docstring)."""
    ids = np.unique(pop.blocks)
    lengths = np.bincount(pop.blocks)[ids]
    pad = int(lengths.max())
    data = folder / "data"
    for key in ("videos", "responses", "behavior", "pupil_center"):
        (data / key).mkdir(parents=True, exist_ok=True)
    tiers = np.array(["train"] * (int(ids[-1]) + 1), dtype="<U16")
    for b in ids.tolist():
        rows = np.flatnonzero(pop.blocks == b)
        n = rows.size
        video = np.full((*pop.stim.shape[1:], pad), np.nan)
        video[..., :n] = np.moveaxis(pop.stim[rows], 0, -1)
        resp = np.full((pop.robs.shape[1], pad), np.nan, np.float32)
        resp[:, :n] = pop.robs[rows].T
        beh = np.full((4, pad), np.nan)
        beh[:, :n] = pop.behavior[rows].T
        for key, arr in (
            ("videos", video),
            ("responses", resp),
            ("behavior", beh[:2]),
            ("pupil_center", beh[2:]),
        ):
            np.save(data / key / f"{b}.npy", arr)
        tiers[b] = TIERS[int(pop.split[rows[0]])]
    (folder / "meta" / "trials").mkdir(parents=True, exist_ok=True)
    np.save(folder / "meta" / "trials" / "tiers.npy", tiers)
    return folder


def import_all(pop: Population, out: Path, *, gap_s: float = 0.5) -> dict[str, Any]:
    """Write the three layouts under ``out``, import the two public ones, copy the native split
    onto the Allen file once its bins are checked to align; returns the paths and notes."""
    from vivit_hpo.data.nwb import import_nwb
    from vivit_hpo.data.sensorium import import_sensorium

    out.mkdir(parents=True, exist_ok=True)
    native = write_native(pop, out / "native.h5")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nwb_file = write_allen(pop, out / "allen.nwb", gap_s=gap_s)
        allen = out / "allen.h5"
        got = import_nwb(
            nwb_file,
            allen,
            presentations=[f"{MOVIE}_presentations"],
            templates=[MOVIE],
            behavior=list(CHANNELS),
        )
    sens = import_sensorium(write_sensorium(pop, out / "mouse"), out / "sensorium.h5")
    with h5py.File(allen, "r+") as f:
        had_split = "split" in f
        frame_index = np.asarray(f["frame_index"][()])
        if not np.array_equal(frame_index, np.arange(pop.stim.shape[0])):
            raise AssertionError("allen: the imported bins do not show frames 0..T-1 in order")
        if not had_split:
            f.create_dataset("split", data=pop.split)
    allen_note = (
        "split as imported"
        if had_split
        else "the importer writes no split: the native split copied on (bins align 1:1)"
    )
    return {
        "native": native,
        "allen": allen,
        "sensorium": out / "sensorium.h5",
        "notes": {
            "native": pop.split_note + "; dfs all ones",
            "allen": f"{allen_note}; {got.num_blocks} blocks, {got.frame_rate:.3f} Hz",
            "sensorium": (
                f"split from tiers; {sum(sens.kept.values())} trials; responses are the counts "
                "(response_kind calcium: the Poisson score, same formula)"
            ),
        },
    }


def same_bins(a: Path, b: Path) -> list[str]:
    """What differs between two session files, bin for bin (empty: the same)."""
    diffs = []
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        for key in ("stim", "robs", "dfs", "behavior", "split"):
            x = np.asarray(fa[key][()], dtype=np.float64) if key in fa else None
            y = np.asarray(fb[key][()], dtype=np.float64) if key in fb else None
            if key == "dfs":
                x = np.ones_like(fa["robs"][()], np.float64) if x is None else x
                y = np.ones_like(fb["robs"][()], np.float64) if y is None else y
            if x is None or y is None or x.shape != y.shape or not np.array_equal(x, y):
                diffs.append(key)
        ba, bb = fa["blocks"][()], fb["blocks"][()]
        runs = [np.r_[True, v[1:] != v[:-1]] for v in (ba, bb)]
        if ba.shape != bb.shape or not np.array_equal(*runs):
            diffs.append("blocks")
    return diffs


def train_steps(tree: dict[str, Any], path: Path, run_dir: Path) -> dict[str, Any]:
    """Train ``tree`` on one file for exactly its epochs x steps_per_epoch; best epoch's test
    BPS (and the pooled, spike-weighted one)."""
    from vivit_hpo.config import parse_run_config
    from vivit_hpo.data import load_sessions
    from vivit_hpo.metrics import mean_over_sessions
    from vivit_hpo.models import count_parameters
    from vivit_hpo.training import Trainer, evaluate, load_run

    cfg = parse_run_config(tree, "layouts")
    data = load_sessions([path], cfg.data)
    start = time.monotonic()
    trainer = Trainer(cfg, data, device="cpu", run_dir=run_dir)
    epochs = sum(1 for _ in trainer.epochs())
    _, model, _ = load_run(run_dir, "cpu")
    score = mean_over_sessions(evaluate(model, data, "test", cfg.train.batch_size))
    return {
        "test_bps": float(score.bps),
        "epochs": epochs,
        "best_epoch": trainer.best_epoch,
        "params": count_parameters(trainer.model),
        "test_bins": int(data.num_samples("test")),
        "seconds": time.monotonic() - start,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--neurons", type=int, default=16)
    p.add_argument("--frames", type=int, default=6000, help="bins, at 30 Hz")
    p.add_argument("--size", type=int, nargs=2, default=(18, 18), metavar=("H", "W"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gap-s", type=float, default=0.5, help="grey gap between Allen blocks")
    p.add_argument("--model", type=Path, default=ROOT / "configs" / "vivit_cpu.yaml")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--steps-per-epoch", type=int, default=40)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--json", type=Path, help="write the rows here")
    p.add_argument("--keep", type=Path, help="write the files here (default: a temporary folder)")
    args = p.parse_args()

    import torch

    from vivit_hpo.config import apply_overrides, read_yaml
    from vivit_hpo.data.simulate import _oracle_of

    torch.set_num_threads(args.threads)
    tree = apply_overrides(
        read_yaml(args.model),
        [
            f"train.epochs={args.epochs}",
            f"train.steps_per_epoch={args.steps_per_epoch}",
            "train.early_stopping_patience=null",
        ],
    )
    pop = simulate(args.neurons, args.frames, tuple(args.size), args.seed)
    with tempfile.TemporaryDirectory(prefix="layouts-") as tmp:
        where = args.keep or Path(tmp)
        files = import_all(pop, where / "data", gap_s=args.gap_s)
        for layout in ("allen", "sensorium"):
            diffs = same_bins(files["native"], files[layout])
            if diffs:
                raise SystemExit(f"{layout}: differs from native in {', '.join(diffs)}")
        num_lags = int(tree.get("data", {}).get("num_lags", 16))
        ones = np.ones(pop.robs.shape, np.uint8)
        oracle = _oracle_of(pop.rates, pop.robs, ones, pop.blocks, pop.split, num_lags)["test"]
        rows = []
        for layout in ("native", "allen", "sensorium"):
            got = train_steps(tree, files[layout], where / "runs" / layout)
            rows.append({"layout": layout, **got, "note": files["notes"][layout]})
            print(f"{layout}: test BPS {got['test_bps']:+.4f} ({got['seconds']:.0f} s)", flush=True)
    native = rows[0]["test_bps"]
    print(
        f"\n{args.neurons} units, {args.frames} bins of {args.size[0]}x{args.size[1]} at 30 Hz, "
        f"seed {args.seed}; {args.model.name}, {args.epochs} x {args.steps_per_epoch} steps each; "
        f"oracle test BPS {oracle:+.4f}; all three files equal bin for bin (stim, robs, dfs, "
        "behavior, blocks, split)"
    )
    print("| layout | test BPS | of native | of oracle | test bins | seconds | note |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        r["ratio_to_native"] = r["test_bps"] / native if native else None
        r["oracle_test_bps"] = oracle
        ratio = "-" if r["ratio_to_native"] is None else f"{r['ratio_to_native']:.3f}"
        print(
            f"| {r['layout']} | {r['test_bps']:+.4f} | {ratio} | {r['test_bps'] / oracle:.0%} | "
            f"{r['test_bins']:,} | {r['seconds']:.0f} | {r['note']} |"
        )
    within = all(abs(r["test_bps"] - native) <= 0.05 * abs(native) for r in rows)
    print(f"within 5% of native: {'yes' if within else 'NO'}")
    if args.json:
        args.json.write_text(json.dumps({"within_5pct": within, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
