"""One run config trained for a wall time, scored per simulated cell type and on both splits.

    python benchmarks/cell_types.py --data pop0 --model configs/vivit_cpu.yaml --seconds 300 \
        --set model.core.norm=batch --set data.clip_frames=null --json out.json

The config (with its ``--set`` overrides) is trained by the project's Trainer for ``--seconds``
of wall time on one torch thread (:func:`vivit_hpo.bench.models.train_for`, the schedule sized
to the time), and its best epoch is scored on the test split and on the first ``--train-bins``
training targets (train against test tells overfitting from underfitting). Each unit's test BPS
is averaged by the simulator's cell type (``truth/<session>.h5``, ``units/cell_type``: 0 simple,
1 complex), beside the true rates' BPS on the same bins: which cells a model misses.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import h5py
import numpy as np
import torch

from vivit_hpo.bench.models import train_for
from vivit_hpo.config import apply_overrides, read_yaml
from vivit_hpo.data import load_sessions
from vivit_hpo.data.simulate import TRUTH_DIR
from vivit_hpo.metrics import BPSAccumulator
from vivit_hpo.training import load_run
from vivit_hpo.training.evaluate import predict

CELL_TYPES = {0: "simple", 1: "complex"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a simulated folder (with truth/)")
    p.add_argument("--model", type=Path, required=True, help="the run config (YAML)")
    p.add_argument("--set", action="append", default=[], help="a config override; repeatable")
    p.add_argument("--seconds", type=float, default=300.0, help="wall time of the training")
    p.add_argument("--train-bins", type=int, default=4000, help="training targets scored")
    p.add_argument("--json", type=Path, help="write the row here")
    args = p.parse_args()

    torch.set_num_threads(1)
    tree = apply_overrides(read_yaml(args.model), args.set)
    with tempfile.TemporaryDirectory(prefix="cell-types-") as tmp:
        run_dir = Path(tmp)
        row = train_for(
            tree, [args.data], seconds=args.seconds, epochs=16, device="cpu", run_dir=run_dir
        )
        cfg, model, _ = load_run(run_dir, "cpu")
    data = load_sessions([args.data], cfg.data)
    for meta in data.metas:
        with h5py.File(args.data / TRUTH_DIR / f"{meta.name}.h5", "r") as f:
            rates, cell_type = f["rates"][:], f["units/cell_type"][:]
        with h5py.File(args.data / f"{meta.name}.h5", "r") as f:
            robs, dfs = f["robs"][:], f["dfs"][:]
        train = predict(model, data, "train", 64, max_bins=args.train_bins)[meta.name]
        test = predict(model, data, "test", 64)[meta.name]
        oracle = BPSAccumulator(meta.num_units)
        oracle.update(
            *(torch.as_tensor(a[test.bins].astype(np.float32)) for a in (rates, robs, dfs))
        )
        truth = oracle.result().bps_per_unit
        row[meta.name] = {
            "train_bps": train.score.bps,
            "test_bps": test.score.bps,
            "oracle_test_bps": float(np.nanmean(truth)),
            **{
                name: {
                    "test_bps": float(np.nanmean(test.score.bps_per_unit[cell_type == k])),
                    "oracle_test_bps": float(np.nanmean(truth[cell_type == k])),
                }
                for k, name in CELL_TYPES.items()
            },
        }
    print(json.dumps(row, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
