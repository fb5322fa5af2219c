"""Encoding models: ViViT, CNN and LN cores, Gaussian readouts, a behaviour modulator.

``build_model(cfg, sessions, num_lags)`` is the entry point; the cost helpers
(``flops_per_sample``, ``estimate_memory_bytes``, ``check_feasible``) work from shapes alone.
The attention function is ``vivit_hpo.models.attention.attention``; it is not re-exported here so
that the name ``vivit_hpo.models.attention`` stays the submodule.
"""

from __future__ import annotations

from vivit_hpo.models.attention import attention_backend
from vivit_hpo.models.budget import (
    check_feasible,
    count_parameters,
    estimate_memory_bytes,
    flops_per_sample,
)
from vivit_hpo.models.cnn import CNNCore
from vivit_hpo.models.cnn2d import CNN2DCore, LNCore
from vivit_hpo.models.encoder import EncodingModel, build_model, collect_attention
from vivit_hpo.models.modulator import ConvGRUModulator
from vivit_hpo.models.readout import GaussianReadout
from vivit_hpo.models.shifter import Shifter
from vivit_hpo.models.vivit import AttentionMaps, ViViTCore

__all__ = [
    "AttentionMaps",
    "CNN2DCore",
    "CNNCore",
    "ConvGRUModulator",
    "EncodingModel",
    "GaussianReadout",
    "LNCore",
    "Shifter",
    "ViViTCore",
    "attention_backend",
    "build_model",
    "check_feasible",
    "collect_attention",
    "count_parameters",
    "estimate_memory_bytes",
    "flops_per_sample",
]
