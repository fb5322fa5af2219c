from __future__ import annotations

import torch
from torch import nn

from vivit_hpo.config import ModelConfig, TrainConfig, ViViTConfig
from vivit_hpo.data.types import SessionMeta
from vivit_hpo.models import build_model
from vivit_hpo.training.schedule import build_optimizer, warmup_cosine

SESSION = SessionMeta(
    name="a",
    num_units=5,
    num_channels=1,
    height=12,
    width=12,
    num_behavior=3,
    frame_rate=60.0,
    mean_rates=(0.1,) * 5,
)


def test_weight_decay_only_on_linear_and_conv_weights() -> None:
    core = ViViTConfig(
        embed_dim=16,
        num_heads=2,
        num_spatial_blocks=1,
        num_temporal_blocks=1,
        kernel_size=(2, 4, 4),
        stride=(2, 4, 4),
        num_registers=2,
        pos_embed="learned",
        norm="layer",
    )
    model = build_model(ModelConfig(core=core), [SESSION], 6)
    _, head = model.param_groups()
    opt = build_optimizer(model.core, head, TrainConfig(weight_decay=0.05), torch.device("cpu"))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    got = {names[i] for i in decayed}

    layers = (nn.Linear, nn.Conv3d)
    expected = {
        f"core.{m_name}.weight" for m_name, m in model.core.named_modules() if isinstance(m, layers)
    }
    assert got == expected
    # The tables that hold representations, not maps, are left alone (each 2-D or more).
    for name in ("core.registers", "core.pos_embed.spatial", "core.pos_embed.temporal"):
        assert model.get_parameter(name).ndim >= 2
        assert name not in got
    assert not any(n.endswith("bias") or ".norm" in n for n in got)
    assert "core.tokenizer.proj.weight" in got
    # Every trainable parameter is in exactly one group; readout and modulator never decay.
    in_groups = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(in_groups) == sorted(id(p) for p in model.parameters())
    assert not any(n.startswith(("readouts.", "modulator.")) for n in got)


def test_warmup_cosine_ends_at_the_floor() -> None:
    assert warmup_cosine(0, warmup=4, total=20, floor=0.1) == 0.25
    assert warmup_cosine(20, warmup=4, total=20, floor=0.1) == 0.1
