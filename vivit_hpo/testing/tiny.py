"""The smallest ViViT the project trains: the base config of the chaos driver, the connections
benchmark and the service tests, where the model is beside the point.

On 16x16 simulated frames an epoch of 4 steps takes about a second on one CPU core.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["tiny_base"]

_TINY_BASE: dict[str, Any] = {
    "model": {
        "core": {
            "embed_dim": 16,
            "num_heads": 2,
            "num_spatial_blocks": 1,
            "num_temporal_blocks": 1,
            "kernel_size": [2, 4, 4],
            "stride": [2, 4, 4],
            "num_registers": 1,
        },
        "modulator": {"hidden_dim": 4},
    },
    "data": {"num_lags": 6, "max_val_bins": 32},
    "train": {
        "batch_size": 16,
        "steps_per_epoch": 4,
        "warmup_epochs": 0,
        "early_stopping_patience": None,
        "lr": 3e-3,
    },
}


def tiny_base(*, steps_per_epoch: int = 4) -> dict[str, Any]:
    """A fresh copy of the tiny run config (a spec's ``base.config``)."""
    tree = copy.deepcopy(_TINY_BASE)
    tree["train"]["steps_per_epoch"] = steps_per_epoch
    return tree
