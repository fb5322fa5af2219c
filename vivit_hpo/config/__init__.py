"""Run configuration: one frozen, validated model per component, parsed once at the edge.

A run config is a YAML file with three sections, ``model``, ``data`` and ``train``; every key
has a default, so ``{}`` is a valid (small) config. ``--set section.key=value`` overrides any
key (:func:`set_key`: values are YAML, so ``--set model.core.kernel_size=[2,4,4]`` works;
``model.core.kernel_size=4`` fills every axis, ``model.core.kernel_size[0]=2`` sets one).

    model:
      core: {kind: vivit, embed_dim: 192, num_heads: 4, ...}   # or {kind: cnn, ...}
      readout: {...}
      modulator: {enabled: true, ...}
    data: {num_lags: 24, ...}
    train: {epochs: 20, lr: 3.0e-4, ...}

The models are in :mod:`vivit_hpo.config.schema`; reading YAML, ``--set`` and the one-line
errors in :mod:`vivit_hpo.config.parse`. Every name is re-exported here.
"""

from __future__ import annotations

from vivit_hpo.config.parse import (
    apply_overrides,
    format_validation_error,
    load_run_config,
    parse_override,
    parse_run_config,
    parse_value,
    read_yaml,
    set_key,
    split_key,
)
from vivit_hpo.config.schema import (
    CNN2DConfig,
    CNNConfig,
    CoreConfig,
    DataConfig,
    LNConfig,
    ModelConfig,
    ModulatorConfig,
    ReadoutConfig,
    RunConfig,
    TrainConfig,
    Triple,
    ViViTConfig,
)

__all__ = [
    "CNN2DConfig",
    "CNNConfig",
    "CoreConfig",
    "DataConfig",
    "LNConfig",
    "ModelConfig",
    "ModulatorConfig",
    "ReadoutConfig",
    "RunConfig",
    "TrainConfig",
    "Triple",
    "ViViTConfig",
    "apply_overrides",
    "format_validation_error",
    "load_run_config",
    "parse_override",
    "parse_run_config",
    "parse_value",
    "read_yaml",
    "set_key",
    "split_key",
]
