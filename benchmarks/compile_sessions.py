"""``train.compile`` over many sessions of different shapes: how many graphs are compiled.

    python benchmarks/compile_sessions.py --sessions 4 8 --device cpu

For each K it simulates K sessions of different frame sizes, unit counts and behaviour channels,
trains a tiny ViViT with ``train.compile: true`` for two epochs (so every session's batches and
the evaluation go through the compiled core), and prints the number of graphs Dynamo compiled
and the seconds it took. The core is compiled alone, in place, so the graphs do not grow with
the number of sessions (one for training, a recompile that makes the frame size dynamic, one for
evaluation); compiling the whole model would add one per session until Dynamo's cache limit.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

TINY = [
    "model.core.embed_dim=16",
    "model.core.num_heads=2",
    "model.core.kernel_size=[2,4,4]",
    "model.core.stride=[2,4,4]",
    "model.core.num_spatial_blocks=1",
    "model.core.num_temporal_blocks=1",
    "model.modulator.hidden_dim=4",
    "data.num_lags=6",
    "data.clip_frames=14",
    "train.epochs=2",
    "train.batch_size=8",
    "data.max_val_bins=40",
    "train.compile=true",
]
SIZES = [(16, 16), (20, 12), (12, 24), (16, 20), (24, 16), (12, 12), (20, 20), (16, 24)]


def graphs_for(k: int, device: str) -> tuple[int, float]:
    """(graphs compiled, seconds) training on ``k`` sessions of different shapes."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from vivit_hpo.config import load_run_config
    from vivit_hpo.data import load_sessions, synthesize
    from vivit_hpo.training import Trainer

    torch._dynamo.reset()
    counters.clear()
    with tempfile.TemporaryDirectory() as tmp:
        synthesize(
            Path(tmp),
            sessions=k,
            neurons=[5 + i for i in range(k)],
            frames=900,
            size=[SIZES[i % len(SIZES)] for i in range(k)],
            behavior=[i % 5 for i in range(k)],
            seed=1,
        )
        cfg = load_run_config(None, [*TINY, f"train.steps_per_epoch={4 * k}"])
        t0 = time.perf_counter()
        trainer = Trainer(cfg, load_sessions([tmp], cfg.data), device=device)
        list(trainer.epochs())
        return int(counters["stats"]["unique_graphs"]), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    print(f"{'sessions':>8} {'graphs':>7} {'seconds':>8}")
    for k in args.sessions:
        graphs, seconds = graphs_for(k, args.device)
        print(f"{k:>8} {graphs:>7} {seconds:>8.0f}")


if __name__ == "__main__":
    main()
