"""The CNN yardstick's training step with its convolutions as 3-D and as 2-D kernels.

    python benchmarks/conv_paths.py [--batch 64] [--threads 1]

``CausalConv3d`` runs a one-frame kernel, and a kernel that spans the whole window without time
padding, as 2-D convolutions (the same sum). This times a forward and backward pass of the
lags-as-channels CNN (``configs/cnn2d.yaml``'s core: 32 channels, kernels 9, 7, 7, 16 lags,
24x24 frames) both ways, in turns, and prints the best round of each and their ratio; it
checks first that both give the same output.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from vivit_hpo.config import CNN2DConfig
from vivit_hpo.models.cnn import CausalConv3d
from vivit_hpo.models.cnn2d import CNN2DCore


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=64, help="windows per step")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = CNN2DConfig.model_validate({"kind": "cnn2d", "channels": [32] * 3, "kernels": [9, 7, 7]})
    core = CNN2DCore(cfg, 1, 16)
    x = torch.randn(args.batch, 1, 16, 24, 24)

    def as_3d(x: Tensor) -> Tensor:
        for m in core.layers:
            x = m.conv(F.pad(x, m.pad)) if isinstance(m, CausalConv3d) else m(x)
        return x

    core.eval()
    with torch.no_grad():
        torch.testing.assert_close(core(x), as_3d(x), atol=1e-4, rtol=1e-4)
    core.train()

    def step(f: Callable[[Tensor], Tensor]) -> float:
        start = time.perf_counter()
        f(x).square().mean().backward()
        return time.perf_counter() - start

    paths: dict[str, Callable[[Tensor], Tensor]] = {"3-D": as_3d, "2-D": core}
    for f in paths.values():
        step(f)
    best = {name: min(step(f) for _ in range(2)) for name, f in paths.items()}
    for _ in range(args.rounds - 1):
        for name, f in paths.items():
            best[name] = min(best[name], step(f))
    for name, s in best.items():
        print(f"{name} convolutions: {s * 1e3:7.1f} ms a step ({args.batch} windows)")
    print(f"ratio 3-D / 2-D: {best['3-D'] / best['2-D']:.2f}")


if __name__ == "__main__":
    main()
