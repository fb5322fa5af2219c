"""The smallest ViViT the project trains, and the study spec built on it: the base config and
spec of the chaos driver, the connections benchmark and the service tests, where the model is
beside the point.

On 16x16 simulated frames an epoch of 4 steps takes about a second on one CPU core.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["TINY_SPACE", "tiny_base", "tiny_spec"]

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

# Cube tubelets on 6 lags: patch 8 is longer than the lags (infeasible), and embed_dim 24 with
# 4 heads gives 6-dim heads that 2D RoPE cannot split (infeasible).
TINY_SPACE: dict[str, Any] = {
    "patch": {"choices": [2, 8], "to": "model.core.kernel_size"},
    "stride": {"choices": [2, 8], "le": "patch", "to": "model.core.stride"},
    "embed_dim": {"choices": [16, 24], "to": "model.core.embed_dim"},
    "heads": {"choices": [2, 4], "to": "model.core.num_heads"},
    "lr": {"low": 1e-3, "high": 1e-2, "log": True, "to": "train.lr"},
}

# One small simulated session (16x16 frames, as the base config expects).
_TINY_DATA: dict[str, Any] = {
    "synth": {"sessions": 1, "neurons": 8, "frames": 3000, "size": [16, 16], "seed": 0}
}


def tiny_base(*, steps_per_epoch: int = 4) -> dict[str, Any]:
    """A fresh copy of the tiny run config (a spec's ``base.config``)."""
    tree = copy.deepcopy(_TINY_BASE)
    tree["train"]["steps_per_epoch"] = steps_per_epoch
    return tree


def tiny_spec(**changes: Any) -> dict[str, Any]:
    """A study spec mapping of tiny ViViTs, a fresh copy; ``changes`` replace top-level keys.

    Unchanged, it trains :func:`tiny_base` over :data:`TINY_SPACE` on one small simulated
    session (``data.synth``) for 3 epochs: 6 trials of TPE and the median pruner, no baseline
    trial, a 1 s heartbeat with a 4 s grace period, the 2 best trials' checkpoints kept under
    the default artifacts root. Validate it with
    :func:`~vivit_hpo.search.spec.parse_spec` or write it as YAML for ``--spec``.

    Example:
        ``tiny_spec(data={"paths": [str(sim_dir)]}, budget={"n_trials": 2})``
    """
    tree: dict[str, Any] = {
        "description": "a tiny study",
        "data": _TINY_DATA,
        "base": {"config": _TINY_BASE},
        "space": TINY_SPACE,
        "epochs": 3,
        "baseline": False,
        "sampler": {"name": "tpe", "seed": 0, "options": {"n_startup_trials": 3}},
        "pruner": {"name": "median", "options": {"n_startup_trials": 2, "n_warmup_steps": 0}},
        "budget": {"n_trials": 6},
        "heartbeat": {"interval_s": 1, "grace_s": 4, "max_retry": 2},
        "artifacts": {"keep_best": 2},
    }
    tree.update(changes)
    return copy.deepcopy(tree)
