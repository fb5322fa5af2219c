"""Training on a session larger than memory: peak resident memory and samples/s, streamed
against in memory, on the same file in one run.

    python benchmarks/streaming.py --file /tmp/big/session.h5 --gb 6 --steps 40

writes (once) a session file of about ``--gb`` GB of uint8 frames (a simulated population's
movie tiled in time, ``--size`` pixels square, chunked and uncompressed), then trains
``configs/vivit_cpu.yaml`` (or ``--model``) for ``--steps`` steps twice, each in a fresh process:
with ``data.stream=on`` (frames read from the file clip by clip) and ``data.stream=off`` (the
whole stimulus read into memory first). It prints, per mode, the peak resident memory of the
process (``ru_maxrss``: everything the process ever held, the model included), clips/s and target
bins/s of the training steps (validation and loading left out), and the streamed/in-memory
ratio (medians of ``--repeats`` alternating runs of each mode). ``--json`` keeps the figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_session(path: Path, gb: float, size: int, neurons: int, seed: int = 0) -> None:
    """Write a session of ``gb`` GB of frames by tiling a simulated movie, chunk by chunk."""
    from vivit_hpo.data import simulate_session

    base = simulate_session(
        "big", neurons=neurons, frames=24_000, size=(size, size), frame_rate=60.0, seed=seed
    )
    total = int(gb * 2**30) // (size * size)
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(tmp, "w") as f:
        stim = f.create_dataset("stim", (total, size, size), np.uint8, chunks=(64, size, size))
        robs = f.create_dataset("robs", (total, neurons), np.uint8)
        beh = f.create_dataset("behavior", (total, 4), np.float32)
        blocks = f.create_dataset("blocks", (total,), np.int64)
        n = base.stim.shape[0]
        block_offset = 0
        for start in range(0, total, n):
            k = min(n, total - start)
            stim[start : start + k] = base.stim[:k]
            robs[start : start + k] = base.robs[:k]
            beh[start : start + k] = base.behavior[:k]
            blocks[start : start + k] = base.blocks[:k] + block_offset
            block_offset += int(base.blocks.max()) + 1
        f.attrs["frame_rate"] = 60.0
        f.attrs["name"] = "big"
    tmp.replace(path)


def run_one(path: Path, model: Path, mode: str, steps: int, threads: int) -> dict[str, float]:
    """Train ``steps`` steps with ``data.stream=mode`` in this process; report the figures."""
    import torch

    from vivit_hpo.config import load_run_config
    from vivit_hpo.data import load_sessions
    from vivit_hpo.training import Trainer

    torch.set_num_threads(threads)
    sets = [f"data.stream={mode}", "train.epochs=1", f"train.steps_per_epoch={steps}"]
    sets += ["data.max_val_bins=200"]
    cfg = load_run_config(model, sets)
    t0 = time.perf_counter()
    data = load_sessions([path], cfg.data)
    load_s = time.perf_counter() - t0
    trainer = Trainer(cfg, data, device="cpu")
    (report,) = list(trainer.epochs())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {
        "mode": mode,
        "streamed": float(data.session("big").streamed),
        "peak_rss_gib": peak,
        "samples_per_s": report.samples_per_s,
        "bins_per_s": report.bins_per_s,
        "load_s": load_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", type=Path, default=Path("/tmp/vivit-big/session.h5"))
    ap.add_argument("--gb", type=float, default=6.0)
    ap.add_argument("--size", type=int, default=36)
    ap.add_argument("--neurons", type=int, default=32)
    ap.add_argument("--model", type=Path, default=ROOT / "configs" / "vivit_cpu.yaml")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs of each mode")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--run", choices=["on", "off"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        print(json.dumps(run_one(args.file, args.model, args.run, args.steps, args.threads)))
        return
    if not args.file.is_file():
        t0 = time.perf_counter()
        make_session(args.file, args.gb, args.size, args.neurons)
        print(
            f"wrote {args.file} ({args.file.stat().st_size / 2**30:.2f} GiB) in "
            f"{time.perf_counter() - t0:.0f} s"
        )
    runs: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
    for _ in range(args.repeats):  # alternating, so that a change of load hits both modes
        for mode in ("on", "off"):
            cmd = [sys.executable, __file__, "--run", mode, "--file", str(args.file)]
            cmd += ["--model", str(args.model), "--steps", str(args.steps)]
            cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = []
    for mode in ("on", "off"):
        rs = runs[mode]
        rows.append(
            {
                "mode": mode,
                "streamed": rs[0]["streamed"],
                "peak_rss_gib": max(r["peak_rss_gib"] for r in rs),
                "samples_per_s": float(np.median([r["samples_per_s"] for r in rs])),
                "bins_per_s": float(np.median([r["bins_per_s"] for r in rs])),
                "load_s": float(np.median([r["load_s"] for r in rs])),
                "samples_per_s_runs": [r["samples_per_s"] for r in rs],
            }
        )
    size = args.file.stat().st_size / 2**30
    print(
        f"\n{args.file}: {size:.2f} GiB, {args.model.name}, {args.steps} steps, "
        f"{args.threads} threads, median of {args.repeats} alternating runs"
    )
    print(f"{'mode':<10} {'peak RSS GiB':>12} {'clips/s':>9} {'bins/s':>9} {'load s':>7}  runs")
    for r in rows:
        name = "streamed" if r["streamed"] else "in memory"
        each = " ".join(f"{x:.0f}" for x in r["samples_per_s_runs"])
        print(
            f"{name:<10} {r['peak_rss_gib']:>12.2f} {r['samples_per_s']:>9.1f} "
            f"{r['bins_per_s']:>9.1f} {r['load_s']:>7.1f}  {each}"
        )
    ratio = rows[0]["samples_per_s"] / rows[1]["samples_per_s"]
    print(f"streamed / in memory samples/s: {ratio:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"file_gib": size, "rows": rows, "ratio": ratio}, indent=1))


if __name__ == "__main__":
    main()
