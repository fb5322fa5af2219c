"""A plain lags-as-channels CNN outside the project's Trainer: the yardstick's reference.

    python benchmarks/reference_cnn.py pop0/sim00.h5 --steps 1000 [--no-center]

The classic model as a lab would write it in a page of PyTorch (neuralpredictors-like): three
2-D convolutions of 32 channels (9x9, 7x7, 7x7) over the 16 lags stacked as channels, batch norm
and ELU, a Gaussian readout (jittered in training), ELU + 1, an exponential per-unit behaviour
gain, Poisson loss, a Laplace penalty on the first layer, AdamW at 5e-3, batches of 64 windows.
It reads the session file directly (the split, blocks and validity masks of the data contract,
the project's sample bins and bits per spike) and prints the validation BPS every 100 steps and
the test BPS of the best validation so far, each as a share of the oracle. Per step, the
project's ``configs/cnn2d.yaml`` should learn at least as fast (benchmarks/NOTES.md); a gap
means a bias in the project's pipeline.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vivit_hpo.data.session import sample_mask
from vivit_hpo.metrics import bits_per_spike

LAGS = 16


class ReferenceCNN(nn.Module):
    def __init__(self, units: int, behaviour: int, mean_rate: Tensor, sigma: float) -> None:
        super().__init__()
        channels, kernels = [LAGS, 32, 32, 32], [9, 7, 7]
        layers: list[nn.Module] = []
        for i, k in enumerate(kernels):
            conv = nn.Conv2d(channels[i], channels[i + 1], k, padding=k // 2, bias=False)
            layers += [conv, nn.BatchNorm2d(channels[i + 1]), nn.ELU()]
        self.core = nn.Sequential(*layers)
        self.mu = nn.Parameter(torch.empty(units, 2).uniform_(-0.3, 0.3))
        self.sigma = nn.Parameter(torch.full((units, 2), sigma))
        self.features = nn.Parameter(torch.full((units, 32), 1 / 32))
        rate = mean_rate.clamp_min(1e-4)
        self.bias = nn.Parameter(torch.where(rate >= 1, rate - 1, torch.log(rate)))
        self.gain = nn.Linear(behaviour, units)
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.gain.bias)

    def forward(self, x: Tensor, behaviour: Tensor) -> Tensor:
        f = self.core(x)  # (B, 32, H, W)
        pos = self.mu[None].expand(x.shape[0], -1, -1)
        if self.training:
            pos = pos + self.sigma * torch.randn_like(pos)
        feats = F.grid_sample(f, pos[:, None], align_corners=False, padding_mode="border")
        drive = torch.einsum("bdn,nd->bn", feats[:, :, 0], self.features) + self.bias
        return (F.elu(drive) + 1) * torch.exp(self.gain(behaviour)) + 1e-6

    def laplace(self) -> Tensor:
        first = self.core[0]
        assert isinstance(first, nn.Conv2d)
        w = first.weight.reshape(-1, 1, *first.weight.shape[2:])
        lap = torch.tensor([[0.0, -1, 0], [-1, 4, -1], [0, -1, 0]])[None, None]
        return F.conv2d(w, lap, padding=1).pow(2).sum() / w.pow(2).sum()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("session", type=Path, help="a simulated session file (oracle.json beside)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--no-center", action="store_true", help="scale the frames, do not centre")
    p.add_argument("--sigma", type=float, default=0.2, help="initial readout jitter")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    with h5py.File(args.session) as f:
        stim = f["stim"][:].astype(np.float32)
        robs, dfs = f["robs"][:].astype(np.float32), f["dfs"][:].astype(np.float32)
        beh, blocks, split = f["behavior"][:].astype(np.float32), f["blocks"][:], f["split"][:]
    samples = sample_mask(blocks, split, LAGS)
    train, val, test = (np.flatnonzero(samples & (split == k)) for k in (0, 1, 2))
    mean, std = stim[train].mean(), stim[train].std()
    frames = torch.from_numpy((stim if args.no_center else stim - mean) / std)
    y, m, b = (torch.from_numpy(a) for a in (robs, dfs, beh))
    lags = torch.arange(LAGS)

    def windows(t: np.ndarray) -> Tensor:
        return frames[torch.as_tensor(t)[:, None] - LAGS + 1 + lags]  # (B, L, H, W)

    rate = (y[train] * m[train]).sum(0) / m[train].sum(0)
    net = ReferenceCNN(y.shape[1], b.shape[1], rate, args.sigma)
    opt = torch.optim.AdamW(net.parameters(), lr=5e-3, weight_decay=0.0)

    def score(t: np.ndarray) -> float:
        net.eval()
        with torch.no_grad():
            r = torch.cat(
                [net(windows(t[i : i + 512]), b[t[i : i + 512]]) for i in range(0, len(t), 512)]
            )
        net.train()
        return float(np.nanmean(bits_per_spike(r.numpy(), y[t].numpy(), m[t].numpy())))

    oracle = next(iter(json.loads((args.session.parent / "oracle.json").read_text()).values()))
    best_val, best_test = -np.inf, float("nan")
    for step in range(1, args.steps + 1):
        t = train[rng.integers(len(train), size=64)]
        r = net(windows(t), b[t])
        nll = F.poisson_nll_loss(r, y[t], log_input=False, reduction="none")
        loss = (nll * m[t]).sum() / m[t].sum() + 0.01 * net.laplace()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            net.mu.clamp_(-1, 1)
        if step % 100 == 0:
            v = score(val)
            if v > best_val:
                best_val, best_test = v, score(test)
            print(
                f"step {step:5d}  val {v:+.4f} ({v / oracle['val']:.0%})  test of the best "
                f"{best_test:+.4f} ({best_test / oracle['test']:.0%})",
                flush=True,
            )


if __name__ == "__main__":
    main()
