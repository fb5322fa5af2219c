"""The quick start's ViViT training step on a CPU with and without the CPU paths.

    python benchmarks/vivit_cpu_paths.py [--spec studies/quickstart.yaml] [--threads 1]

Two choices make the small ViViTs of the CPU studies faster on a CPU without changing their
sums: the tubelet tokenizer's Conv3d runs as one 2-D convolution (``models.layers.conv3d``) and
attention over at most ``CPU_MATH_MAX_LEN`` tokens (a window's temporal attention) runs by the
math path. This times a training step (forward, Poisson loss, backward, AdamW) of the spec's
base config on random windows, the paths on and off in turns, and prints the best round of each
and their ratio; it checks first that both give the same rates.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from vivit_hpo.config import parse_run_config
from vivit_hpo.data.types import SessionMeta
from vivit_hpo.models import attention as attention_mod
from vivit_hpo.models import tokenizer as tokenizer_mod
from vivit_hpo.models.encoder import build_model


@contextmanager
def generic_paths() -> Iterator[None]:
    """F.conv3d in the tokenizer and SDPA for every sequence length (the paths before)."""
    conv, short = tokenizer_mod.conv3d, attention_mod.CPU_MATH_MAX_LEN
    tokenizer_mod.conv3d = lambda x, w, b, stride: F.conv3d(x, w, b, stride)  # type: ignore[assignment]
    attention_mod.CPU_MATH_MAX_LEN = 0
    try:
        yield
    finally:
        tokenizer_mod.conv3d, attention_mod.CPU_MATH_MAX_LEN = conv, short


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--spec", type=Path, default=Path("studies/quickstart.yaml"))
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--steps", type=int, default=20, help="training steps per round")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = parse_run_config(yaml.safe_load(args.spec.read_text())["base"]["config"])
    lags, batch = cfg.data.num_lags, cfg.train.batch_size
    meta = SessionMeta("s", 64, 1, 24, 24, 4, 60.0, (0.1,) * 64)
    model = build_model(cfg.model, [meta], lags)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, behavior = torch.randn(batch, 1, lags, 24, 24), torch.randn(batch, lags, 4)
    counts = torch.poisson(torch.full((batch, 1, 64), 0.1))

    model.eval()
    with torch.no_grad():
        fast = model(x, "s", behavior)
        with generic_paths():
            torch.testing.assert_close(model(x, "s", behavior), fast, atol=1e-4, rtol=1e-4)
    model.train()

    def round_s() -> float:
        start = time.perf_counter()
        for _ in range(args.steps):
            rates = model(x, "s", behavior)
            loss = F.poisson_nll_loss(rates, counts, log_input=False)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return (time.perf_counter() - start) / args.steps

    round_s()  # warm-up
    best = {"CPU paths": float("inf"), "generic paths": float("inf")}
    for _ in range(args.rounds):
        best["CPU paths"] = min(best["CPU paths"], round_s())
        with generic_paths():
            best["generic paths"] = min(best["generic paths"], round_s())
    for name, s in best.items():
        print(f"{name}: {s * 1e3:6.1f} ms a step ({batch} windows of {lags} frames)")
    print(f"ratio generic / CPU paths: {best['generic paths'] / best['CPU paths']:.2f}")


if __name__ == "__main__":
    main()
