from __future__ import annotations

import pytest
import torch
from model_helpers import assert_all_grads, meta, tiny_vivit

from vivit_hpo.config import (
    CNN2DConfig,
    CNNConfig,
    LNConfig,
    ModelConfig,
    ModulatorConfig,
    ViViTConfig,
    load_run_config,
)
from vivit_hpo.data import ClipGeometry
from vivit_hpo.errors import ConfigError, DataError
from vivit_hpo.models import build_model, collect_attention, count_parameters
from vivit_hpo.models.modulator import ConvGRUModulator
from vivit_hpo.models.readout import GaussianReadout

L = 7
SESSIONS = [
    meta("big.one", units=5, height=13, width=10, behavior=3),
    meta("train", units=3, height=9, width=12, behavior=0),  # a name ModuleDict would refuse
    meta("c", units=2, height=11, width=11, behavior=1),
]
# A session whose behaviour names a pupil position (the simulator's eye_x, eye_y).
EYES = meta(
    "eyes", units=4, height=13, width=10, behavior=3, behavior_names=("run", "eye_x", "eye_y")
)
NO_EYES = meta("no_eyes", units=3, height=9, width=12, behavior=2, behavior_names=("run", "pupil"))
BIASES = tiny_vivit(stem_channels=(3,), token_norm=True, qk_norm=True)


def _inputs(m, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor | None]:
    stim = torch.rand(batch, m.num_channels, L, m.height, m.width)
    beh = torch.randn(batch, L, m.num_behavior) if m.num_behavior else None
    return stim, beh


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(core=tiny_vivit(), modulator=ModulatorConfig(hidden_dim=4)),
        ModelConfig(core=tiny_vivit(pos_embed="learned", parallel=False)),
        ModelConfig(core=CNNConfig(channels=(4, 8), stem_kernel=(3, 3, 3))),
        ModelConfig(core=CNN2DConfig(channels=(4, 6), kernels=(5, 3))),
        ModelConfig(core=LNConfig(filters=3, kernel=5)),
    ],
    ids=["vivit", "vivit-learned", "cnn", "cnn2d", "ln"],
)
def test_sessions_of_different_sizes_through_one_model(cfg: ModelConfig) -> None:
    model = build_model(cfg, SESSIONS, L).train()
    loss = torch.zeros(())
    for m in SESSIONS:
        stim, beh = _inputs(m)
        rates = model(stim, m.name, beh)
        assert rates.shape == (2, 1, m.num_units)  # a window: its last bin
        assert rates.dtype == torch.float32 and (rates > 0).all() and torch.isfinite(rates).all()
        loss = loss + torch.nn.functional.poisson_nll_loss(
            rates, torch.ones_like(rates), log_input=False
        )
        loss = loss + model.regularizer(m.name)
    loss.backward()
    # Behind the zero-initialised gain every modulator weight but the gain has a zero gradient
    # at the start; they must still be connected (not None).
    assert_all_grads(model, allow_zero=("modulator.",))
    assert model.modulator is not None
    assert model.modulator.gain.weight.grad is not None
    assert model.modulator.gain.weight.grad.abs().sum() > 0


def test_behaviour_reaches_the_rates_once_the_gain_is_nonzero() -> None:
    model = build_model(ModelConfig(core=tiny_vivit()), SESSIONS, L).eval()
    assert model.modulator is not None
    with torch.no_grad():
        model.modulator.gain.weight.normal_()
    m = SESSIONS[0]
    stim, beh = _inputs(m)
    assert beh is not None
    assert not torch.allclose(model(stim, m.name, beh), model(stim, m.name, beh + 1))


def test_accessors_and_param_groups() -> None:
    model = build_model(ModelConfig(core=tiny_vivit()), SESSIONS, L)
    assert isinstance(model.readout("train"), GaussianReadout)
    assert model.readout("c").num_units == 2
    assert isinstance(model.modulator, ConvGRUModulator)
    core, head = model.param_groups()
    ids = [id(p) for p in core + head]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}
    assert {id(p) for p in core} == {id(p) for p in model.core.parameters()}
    assert sum(p.numel() for p in core + head) == count_parameters(model)
    assert model.sessions["c"].num_behavior == 1


def test_modulator_off() -> None:
    off = ModelConfig(core=tiny_vivit(), modulator=ModulatorConfig(enabled=False))
    model = build_model(off, SESSIONS, L)
    assert model.modulator is None
    stim, _ = _inputs(SESSIONS[0])
    assert model(stim, "big.one", None).shape == (2, 1, 5)  # behaviour not needed
    # No session with behaviour: no modulator either.
    assert build_model(ModelConfig(core=tiny_vivit()), [SESSIONS[1]], L).modulator is None


def test_errors() -> None:
    cfg = ModelConfig(core=tiny_vivit())
    model = build_model(cfg, SESSIONS, L)
    stim, beh = _inputs(SESSIONS[0])
    with pytest.raises(DataError, match="'nope' is not one of the model's sessions"):
        model(stim, "nope", beh)
    with pytest.raises(DataError, match=r"expected \(B, 1, F, H, W\)"):
        model(stim.expand(-1, 3, -1, -1, -1), "big.one", beh)
    with pytest.raises(DataError, match="3 behaviour channels"):
        model(stim, "big.one", None)
    rgb = meta("rgb", channels=3)
    with pytest.raises(
        ConfigError, match=r"disagree on stimulus channels \(big.one has C=1.*rgb has C=3"
    ):
        build_model(cfg, [*SESSIONS, rgb], L)
    with pytest.raises(ConfigError, match="unique, repeated: c"):
        build_model(cfg, [*SESSIONS, SESSIONS[2]], L)
    with pytest.raises(ConfigError, match="no sessions"):
        build_model(cfg, [], L)
    with pytest.raises(ConfigError, match="session 'tiny': frames of 2x10 are smaller"):
        build_model(cfg, [*SESSIONS, meta("tiny", height=2)], L)
    with pytest.raises(ConfigError, match="gives 1 temporal token"):
        build_model(cfg, SESSIONS, 2)


def test_collect_attention_from_the_model() -> None:
    model = build_model(ModelConfig(core=tiny_vivit()), SESSIONS, L)
    stim, _ = _inputs(SESSIONS[0])
    maps = collect_attention(model, stim)
    assert maps.spatial[0].shape == (2, 26, 26)
    cnn = build_model(ModelConfig(core=CNNConfig(channels=(4,))), SESSIONS, L)
    with pytest.raises(ConfigError, match="need a ViViT core"):
        collect_attention(cnn, stim)


def test_bf16_autocast_with_modulator() -> None:
    model = build_model(ModelConfig(core=tiny_vivit()), SESSIONS, L).train()
    assert model.modulator is not None
    with torch.no_grad():
        model.modulator.gain.weight.normal_()
    stim, beh = _inputs(SESSIONS[0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rates = model(stim, "big.one", beh)
    assert rates.dtype == torch.float32 and torch.isfinite(rates).all() and (rates > 0).all()
    rates.sum().backward()
    assert all(p.grad is not None for p in model.core.parameters())


def test_state_dict_round_trip() -> None:
    cfg = ModelConfig(core=tiny_vivit())
    a = build_model(cfg, SESSIONS, L).eval()
    b = build_model(cfg, SESSIONS, L).eval()
    b.load_state_dict(a.state_dict())
    stim, beh = _inputs(SESSIONS[0])
    torch.testing.assert_close(a(stim, "big.one", beh), b(stim, "big.one", beh))


CNN = CNNConfig(channels=(4, 8), stem_kernel=(3, 3, 3))


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(core=tiny_vivit(patch_dropout=0.3)),
        ModelConfig(core=CNN),
        ModelConfig(core=CNN2DConfig(channels=(4, 6), kernels=(5, 3))),
        ModelConfig(core=LNConfig(filters=3, kernel=5)),
        ModelConfig(core=BIASES, behavior_tokens=True, shifter=True),
        ModelConfig(core=CNN, shifter=True),
    ],
    ids=["vivit", "cnn", "cnn2d", "ln", "vivit-biases", "cnn-shifter"],
)
def test_clip_predictions_are_causal_end_to_end(cfg: ModelConfig) -> None:
    # Core, modulator, behaviour tokens, shifter and readout together: changing frame f (and
    # its behaviour) changes no prediction of a bin before f, and does change those from f on.
    core = cfg.core
    stride = core.stride[0] if isinstance(core, ViViTConfig) else 1
    geom = ClipGeometry.make(L, L + 4 * stride, stride)
    model = build_model(cfg, [*SESSIONS, EYES], geom).eval()
    assert model.modulator is not None
    with torch.no_grad():
        model.modulator.gain.weight.normal_()
        if model.shifter is not None:
            model.shifter.net[2].weight.normal_()
    assert (model.shifter is not None) == cfg.shifter
    m = EYES
    stim = torch.rand(2, 1, geom.frames, m.height, m.width)
    beh = torch.randn(2, geom.frames, m.num_behavior)
    with torch.no_grad():
        base = model(stim, m.name, beh)
        assert base.shape == (2, geom.num_targets, m.num_units)
        for f in range(geom.frames):
            s2, b2 = stim.clone(), beh.clone()
            s2[:, :, f] = torch.rand_like(s2[:, :, f])
            b2[:, f] += 1.0
            diff = (model(s2, m.name, b2) - base).abs().amax(dim=(0, 2))  # (P,)
            for i, bin_ in enumerate(geom.offsets.tolist()):
                if bin_ < f:
                    assert diff[i] == 0, f"the prediction of bin {bin_} saw frame {f}"
            after = [i for i, b in enumerate(geom.offsets.tolist()) if b >= f]
            if after:
                assert diff[after[-1]] > 0, f"frame {f} reaches no prediction"


def test_the_quick_start_tubelet_trains_on_clips() -> None:
    # 24x24 frames, num_lags 8, tubelet (8, 4, 4) every (8, 4, 4): one temporal token per window
    # (refused), eight per 64-frame clip, each read-out token with 8 frames of history.
    cfg = ModelConfig(core=tiny_vivit(kernel_size=(8, 4, 4), stride=(8, 4, 4)))
    m = meta("q", height=24, width=24)
    with pytest.raises(ConfigError, match="gives 1 temporal token"):
        build_model(cfg, [m], 8)
    geom = ClipGeometry.make(8, 64, 8)
    assert (geom.frames, geom.num_targets) == (64, 8)
    model = build_model(cfg, [m], geom)
    stim = torch.rand(2, 1, 64, 24, 24)
    rates = model(stim, "q")
    assert rates.shape == (2, 8, m.num_units) and torch.isfinite(rates).all()
    rates.sum().backward()
    assert_all_grads(model)
    model.eval()
    with torch.no_grad():
        base = model(stim, "q")
        late = stim.clone()
        late[:, :, 8:] = torch.rand_like(late[:, :, 8:])
        # the first target (clip frame 7) sees frames 0..7 only
        assert (model(late, "q") - base)[:, 0].abs().max() == 0


def test_clips_need_a_causal_core() -> None:
    with pytest.raises(ConfigError, match=r"clips need model.core.causal=true"):
        load_run_config(None, ["model.core.causal=false", "data.num_lags=8", "data.clip_frames=32"])
    # One target per window stays available for the non-causal ablation.
    assert not load_run_config(None, ["model.core.causal=false"]).model.core.causal


def _loss(model: torch.nn.Module, sessions: list) -> torch.Tensor:
    loss = torch.zeros(())
    for m in sessions:
        stim, beh = _inputs(m)
        rates = model(stim, m.name, beh)
        assert rates.shape == (2, 1, m.num_units)
        assert (rates > 0).all() and torch.isfinite(rates).all()
        loss = loss + torch.nn.functional.poisson_nll_loss(
            rates, torch.ones_like(rates), log_input=False
        )
    return loss


@pytest.mark.parametrize("core", [BIASES, CNN], ids=["vivit", "cnn"])
def test_behavior_tokens_and_shifter_shapes_and_grads(core: ViViTConfig | CNNConfig) -> None:
    vivit = isinstance(core, ViViTConfig)
    cfg = ModelConfig(core=core, behavior_tokens=vivit, shifter=True)
    sessions = [EYES, NO_EYES, SESSIONS[1]]
    model = build_model(cfg, sessions, L).train()
    _loss(model, sessions).backward()
    assert_all_grads(model, allow_zero=("modulator.",))
    assert model.pupil == {"eyes": (1, 2)} and model.shifter is not None
    if vivit:
        assert model.behavior_embed is not None
        assert sorted(model.behavior_embed.keys()) == ["eyes", "no_eyes"]  # not `train`
    else:
        assert model.behavior_embed is None
    core_params, head = model.param_groups()
    assert {id(p) for p in core_params + head} == {id(p) for p in model.parameters()}
    assert {id(p) for p in model.shifter.parameters()} <= {id(p) for p in head}


def test_behavior_tokens_carry_behaviour_into_the_core() -> None:
    off = ModulatorConfig(enabled=False)
    model = build_model(ModelConfig(core=BIASES, modulator=off, behavior_tokens=True), SESSIONS, L)
    model.eval()
    m = SESSIONS[0]
    stim, beh = _inputs(m)
    assert beh is not None
    with torch.no_grad():
        assert not torch.allclose(model(stim, m.name, beh), model(stim, m.name, beh + 1))
    with pytest.raises(DataError, match="3 behaviour channels"):
        model(stim, m.name, None)
    stim, _ = _inputs(SESSIONS[1])  # no behaviour: nothing added, none needed
    assert model(stim, "train", None).shape == (2, 1, 3)
    with pytest.raises(ConfigError, match="behavior_tokens needs a ViViT core"):
        load_run_config(None, ["model.core.kind=cnn", "model.behavior_tokens=true"])


def test_shifter_moves_the_readout_by_the_pupil_only() -> None:
    off = ModulatorConfig(enabled=False)
    cfg = ModelConfig(core=tiny_vivit(), modulator=off, shifter=True, shifter_hidden=3)
    model = build_model(cfg, [EYES, NO_EYES], L).eval()
    assert model.shifter is not None and model.pupil == {"eyes": (1, 2)}
    with torch.no_grad():
        model.shifter.net[2].weight.normal_()
    for m, moves in ((EYES, [False, True, True]), (NO_EYES, [False, False])):
        stim, beh = _inputs(m)
        assert beh is not None
        with torch.no_grad():
            base = model(stim, m.name, beh)
            for channel, expected in enumerate(moves):
                b2 = beh.clone()
                b2[:, :, channel] += 1.0
                assert (not torch.equal(model(stim, m.name, b2), base)) == expected, channel
    stim, _ = _inputs(EYES)
    with pytest.raises(DataError, match="3 behaviour channels"):
        model(stim, "eyes", None)
    # No session names a pupil position: no shifter.
    assert build_model(cfg, [NO_EYES, SESSIONS[1]], L).shifter is None


@pytest.mark.parametrize(
    "core", [tiny_vivit(laplace=0.5), CNN2DConfig(laplace=0.5), LNConfig(laplace=0.5)]
)
def test_the_loss_penalty_holds_the_cores_smoothness_term(
    core: ViViTConfig | CNN2DConfig | LNConfig,
) -> None:
    model = build_model(ModelConfig(core=core), SESSIONS, L)
    torch.testing.assert_close(
        model.regularizer("c"), model.readout("c").regularizer() + model.core.regularizer()
    )
    assert model.core.regularizer() > 0


def test_unit_gain_scales_each_units_rate_by_its_behaviour() -> None:
    m = SESSIONS[0]
    plain = build_model(ModelConfig(core=tiny_vivit()), [m], L).eval()
    gained = build_model(ModelConfig(core=tiny_vivit(), unit_gain=True), [m], L).eval()
    gained.load_state_dict(plain.state_dict(), strict=False)
    stim, beh = _inputs(m)
    assert beh is not None and gained.unit_gain is not None
    with torch.no_grad():
        base = plain(stim, m.name, beh)
        # Zero-initialised: the gain starts at 1.
        torch.testing.assert_close(gained(stim, m.name, beh), base)
        gain = gained.unit_gain[gained._keys[m.name]]
        gain.proj.weight.copy_(torch.tensor([[0.5, 0, 0]] * m.num_units) * torch.arange(5)[:, None])
        got = gained(stim, m.name, beh)
        # The window's one read-out token pools the behaviour over the last tubelet's frames.
        run = beh[:, -tiny_vivit().kernel_size[0] :, 0].mean(1)  # (B,)
        log_gain = 0.5 * run[:, None, None] * torch.arange(5)
        want = base * torch.exp(3 * torch.tanh(log_gain / 3))
        torch.testing.assert_close(got, want)
        # The log-gain is bounded: a huge weight gives at most exp(3).
        gain.proj.weight.fill_(1e4)
        assert (gained(stim, m.name, beh) / base).max() <= torch.exp(torch.tensor(3.0)) * 1.0001
    # Its parameters train at the head's learning rate, beside the readouts.
    _, head = gained.param_groups()
    assert any(p is gain.proj.weight for p in head)
    # A session without behaviour has no gain.
    no_behaviour = build_model(ModelConfig(unit_gain=True, core=tiny_vivit()), [SESSIONS[1]], L)
    assert no_behaviour.unit_gain is None
