"""What the small model's step spends its time on: ablations against the reference, interleaved.

    python benchmarks/ablation.py --device cuda --batch 64 --input 32 64 64 --json out.json

Builds the reference and several variants of ``configs/vivit_small.yaml`` (each turning one
feature off: the behaviour modulator, patch dropout and drop path, RMSNorm, SwiGLU, RoPE) and
runs their training steps round-robin (reference, variant 1, variant 2, ..., then again), so
every model sees the same machine state; the figure is the median step after ``--warmup``
rounds. CUDA: each step between two CUDA events. CPU: process CPU time of one intra-op thread
(``--threads 1``), which a shared, noisy machine disturbs far less than wall-clock time.

The step is the bench's (``vivit_hpo.bench``): the Trainer's own step on a synthetic session.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from vivit_hpo.bench import build_ours, build_reference, default_reference_path, load_reference
from vivit_hpo.config import load_run_config

ROOT = Path(__file__).resolve().parents[1]
VARIANTS: dict[str, tuple[list[str], int]] = {
    "ours: vivit_small": ([], 2),
    "no modulator (K=0)": ([], 0),
    "no patch dropout, no drop path": (["model.core.patch_dropout=0", "model.core.drop_path=0"], 2),
    "norm=layer": (["model.core.norm=layer"], 2),
    "mlp=gelu": (["model.core.mlp=gelu"], 2),
    "no RoPE (pos_embed=sinusoidal)": (["model.core.pos_embed=sinusoidal"], 2),
    "reference-like: gelu, layer, no modulator, no dropouts": (
        [
            "model.core.mlp=gelu",
            "model.core.norm=layer",
            "model.core.patch_dropout=0",
            "model.core.drop_path=0",
        ],
        0,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "vivit_small.yaml")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--input", type=int, nargs=3, default=[32, 64, 64])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="CPU intra-op threads")
    parser.add_argument("--reference-path", type=Path, default=default_reference_path())
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cpu":
        torch.set_num_threads(args.threads)
    size = tuple(args.input)
    base = load_run_config(args.config)
    workloads = {
        "reference": build_reference(
            load_reference(args.reference_path, dev),
            base.model.core,  # type: ignore[arg-type]
            batch_size=args.batch,
            input_size=size,  # type: ignore[arg-type]
            num_units=256,
            device=dev,
            compile=False,
            backend=None,
        )
    }
    for name, (sets, behavior) in VARIANTS.items():
        workloads[name] = build_ours(
            load_run_config(args.config, sets),
            label=name,
            batch_size=args.batch,
            input_size=size,  # type: ignore[arg-type]
            num_units=256,
            num_behavior=behavior,
            device=dev,
            compile=False,
        )
    times: dict[str, list[float]] = {k: [] for k in workloads}
    events: dict[str, list[tuple[torch.cuda.Event, torch.cuda.Event]]] = {k: [] for k in workloads}
    for i in range(args.rounds):
        for name, w in workloads.items():
            if dev.type == "cuda":
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                w.step(i)
                e1.record()
                events[name].append((e0, e1))
            else:
                t = time.process_time()
                w.step(i)
                times[name].append((time.process_time() - t) * 1e3)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        times = {k: [a.elapsed_time(b) for a, b in v] for k, v in events.items()}
    median = {k: statistics.median(v[args.warmup :]) for k, v in times.items()}
    ref = median["reference"]
    print(f"{args.device} B={args.batch} input={size} rounds={args.rounds} warmup={args.warmup}")
    print("| model | median ms/step | reference / this | GFLOP per sample (counted) |")
    print("| --- | ---: | ---: | ---: |")
    for name, ms in median.items():
        gflop = workloads[name].flops_per_sample / 1e9
        print(f"| {name} | {ms:.1f} | {ref / ms:.2f} | {gflop:.2f} |")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "args": vars(args) | {"json": str(args.json)},
                    "median_ms": median,
                    "step_ms": times,
                },
                indent=1,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
