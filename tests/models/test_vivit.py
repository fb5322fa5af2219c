from __future__ import annotations

import copy

import pytest
import torch
from model_helpers import assert_all_grads, assert_causal, tiny_vivit

from vivit_hpo.models.encoder import collect_attention
from vivit_hpo.models.layers import BatchNormLast, DropPath, laplace_l2
from vivit_hpo.models.vivit import (
    ParallelBlock,
    SequentialBlock,
    TubeletTokenizer,
    ViViTCore,
    num_kept_tokens,
    tubelet_grid,
)

SIZE = (7, 13, 10)  # T, H, W: nothing divides evenly with kernel (2, 3, 3), stride (2, 2, 3)


def _x(batch: int = 2, size: tuple[int, int, int] = SIZE) -> torch.Tensor:
    return torch.randn(batch, 1, *size)


def test_tubelet_grid_pads_time_in_front_and_space_symmetrically() -> None:
    grid, pad = tubelet_grid(SIZE, (2, 3, 3), (2, 2, 3))
    # T: 7 frames -> 4 tokens from 8 = 1 front pad + 7; H: 13 fits 6 tokens; W: 10 -> 4 tokens
    # from 12 = 1 + 10 + 1.
    assert grid == (4, 6, 4)
    assert pad == (1, 0, 0, 1, 1)
    assert tubelet_grid((8, 8, 8), (4, 4, 4), (4, 4, 4)) == ((2, 2, 2), (0, 0, 0, 0, 0))
    assert tubelet_grid((8, 9, 8), (4, 4, 4), (4, 4, 4))[1] == (0, 1, 2, 0, 0)


def test_tokenizer_last_token_ends_on_last_frame() -> None:
    tok = TubeletTokenizer(1, 8, (2, 3, 3), (2, 2, 3))
    x = _x(1)
    base, grid = tok(x)
    assert base.shape == (1, 4, 24, 8) and grid == (4, 6, 4)
    x2 = x.clone()
    x2[:, :, -1] += 1.0  # the last frame is in the last token only
    changed = (tok(x2)[0] - base).abs().amax(dim=(0, 2, 3))
    assert changed[-1] > 0 and (changed[:-1] == 0).all()
    x3 = x.clone()
    x3[:, :, 0] += 1.0  # the first frame shares the first token with the front padding
    changed = (tok(x3)[0] - base).abs().amax(dim=(0, 2, 3))
    assert changed[0] > 0 and (changed[1:] == 0).all()


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"parallel": False},
        {"mlp": "gelu", "norm": "layer"},
        {"pos_embed": "learned", "num_registers": 0},
        {"pos_embed": "sinusoidal", "parallel": False, "mlp": "gelu"},
        {"causal": False, "kernel_size": (2, 4, 4), "stride": (1, 4, 4)},
        {"token_norm": True},
        {"qk_norm": True},
        {"qk_norm": True, "parallel": False, "norm": "layer", "pos_embed": "learned"},
        {"stem_channels": (4, 6)},
        {"stem_channels": (3,), "stem_kernel": (2, 3, 2), "token_norm": True, "qk_norm": True},
    ],
)
def test_core_shapes_grads_and_finite(overrides: dict) -> None:
    cfg = tiny_vivit(**overrides)
    core = ViViTCore(cfg, 1, max_input=SIZE)
    x = _x()
    out = core(x)
    grid = tubelet_grid(SIZE, cfg.kernel_size, cfg.stride)[0]
    assert out.shape == (2, 32, *grid)
    assert torch.isfinite(out).all()
    out.pow(2).mean().backward()
    assert_all_grads(core)


def test_block_kinds_follow_config() -> None:
    assert isinstance(ViViTCore(tiny_vivit(), 1).spatial[0], ParallelBlock)
    core = ViViTCore(tiny_vivit(parallel=False), 1)
    assert isinstance(core.spatial[0], SequentialBlock)
    assert isinstance(core.temporal[0], SequentialBlock)


def test_drop_path_grows_linearly_over_the_stack() -> None:
    cfg = tiny_vivit(num_spatial_blocks=2, num_temporal_blocks=3, drop_path=0.4)
    core = ViViTCore(cfg, 1)
    rates = [m.p for m in core.modules() if isinstance(m, DropPath)]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def _token_ends(t: int, kt: int, st: int, tp: int) -> list[int]:
    """Index of the last frame of each temporal token (front padding rule)."""
    return [t - 1 - (tp - 1 - j) * st for j in range(tp)]


@pytest.mark.parametrize("pos_embed", ["rope", "learned", "sinusoidal"])
@pytest.mark.parametrize("frame", [2, 4, 6])
def test_causality(pos_embed: str, frame: int) -> None:
    cfg = tiny_vivit(pos_embed=pos_embed, dropout=0.1, drop_path=0.1)
    core = ViViTCore(cfg, 1, max_input=SIZE).eval()
    assert_causal(core, _x(), frame, _token_ends(SIZE[0], 2, 2, 4))


@pytest.mark.parametrize(
    "overrides",
    [
        {"token_norm": True},
        {"qk_norm": True},
        {"stem_channels": (3, 4)},
        {"stem_channels": (3,), "stem_kernel": (4, 3, 3), "token_norm": True, "qk_norm": True},
    ],
)
@pytest.mark.parametrize("frame", [1, 4, 6])
def test_inductive_biases_keep_causality(overrides: dict, frame: int) -> None:
    # The stem convolves over time at full resolution: padded on the left only, a token still
    # sees no frame after its own last one.
    core = ViViTCore(tiny_vivit(**overrides), 1).eval()
    assert_causal(core, _x(), frame, _token_ends(SIZE[0], 2, 2, 4))


def test_inductive_biases_are_off_by_default() -> None:
    # Existing studies and checkpoints are unchanged: no new modules or parameters by default.
    core = ViViTCore(tiny_vivit(), 1)
    assert core.stem is None and core.token_norm is None
    assert all(
        isinstance(b.q_norm, torch.nn.Identity) and isinstance(b.k_norm, torch.nn.Identity)
        for b in [*core.spatial, *core.temporal]
    )
    names = [n for n, _ in core.named_parameters()]
    assert not [n for n in names if "stem" in n or "token_norm" in n or "q_norm" in n]


def test_stem_feeds_the_tokenizer_at_full_resolution() -> None:
    core = ViViTCore(tiny_vivit(stem_channels=(3, 5)), 1)
    assert core.stem is not None and core.tokenizer.proj.in_channels == 5
    x = _x()
    assert core.stem(x).shape == (2, 5, *SIZE)
    assert core(x).shape == (2, 32, 4, 6, 4)


@pytest.mark.parametrize("stem", [(), (3,)])
def test_laplace_smooths_the_first_layer_that_sees_the_frames(stem: tuple[int, ...]) -> None:
    # The penalty is the 2-D CNN's (normalised Laplace) on the tokenizer, or on the stem's first
    # conv when there is one; its gradient makes that layer's filters smoother.
    core = ViViTCore(tiny_vivit(laplace=0.5, stem_channels=stem), 1)
    first = core.stem[0].conv.weight if core.stem is not None else core.tokenizer.proj.weight
    assert core.regularizer() > 0
    before = laplace_l2(first).item()
    opt = torch.optim.SGD([first], lr=0.05)
    for _ in range(20):
        opt.zero_grad()
        core.regularizer().backward()
        opt.step()
    assert laplace_l2(first).item() < 0.8 * before
    assert ViViTCore(tiny_vivit(stem_channels=stem), 1).regularizer() == 0


def test_batch_final_norm_keeps_each_tokens_amplitude_relative_to_the_others() -> None:
    # A per-token norm gives every token the same RMS; the batch norm normalises each channel
    # over the whole batch, so a token with twice the residual keeps twice the deviation.
    core = ViViTCore(tiny_vivit(final_norm="batch"), 1)
    assert isinstance(core.norm, BatchNormLast)
    z = torch.randn(6, 4, 32)
    z[0] *= 8
    out = core.norm(z)  # training: batch statistics
    torch.testing.assert_close(out.mean((0, 1)), torch.zeros(32), atol=1e-5, rtol=0)
    assert out[0].pow(2).mean() > 10 * out[1:].pow(2).mean()
    token = ViViTCore(tiny_vivit(final_norm="token"), 1).norm(z)
    torch.testing.assert_close(token[0].pow(2).mean(), token[1].pow(2).mean(), rtol=0.05, atol=0)
    assert tiny_vivit(final_norm=True).final_norm == "token"
    assert tiny_vivit(final_norm=False).final_norm == "none"


def test_batch_norms_keep_the_contrast_that_per_token_norms_divide_out() -> None:
    # Every pre-norm (and the final norm) per token makes the core nearly blind to the input's
    # contrast; batch norms (running statistics at evaluation) let it reach the readout.
    x = _x()
    ratios = {}
    for norm in ("rms", "batch"):
        core = ViViTCore(tiny_vivit(norm=norm, final_norm="token", qk_norm=True), 1).eval()
        with torch.no_grad():
            ratios[norm] = (core(10 * x).norm() / core(x).norm()).item()
    assert ratios["batch"] > 5 and ratios["rms"] < 2, ratios
    core = ViViTCore(tiny_vivit(norm="batch", qk_norm=True), 1)
    assert isinstance(core.norm, BatchNormLast)
    assert isinstance(core.spatial[0].norm, BatchNormLast)
    assert not isinstance(core.spatial[0].q_norm, BatchNormLast)  # QK-norm stays per token
    assert_causal(core.eval(), _x(), 3, _token_ends(SIZE[0], 2, 2, 4))


def test_without_the_norms_the_output_keeps_each_positions_amplitude() -> None:
    # stem_norm none and final_norm false: scaling the input scales the features (a linear
    # stem, GELU near 0 aside, is not renormalised per position); with the norms it would not.
    cfg = tiny_vivit(stem_channels=(3,), stem_norm="none", final_norm=False, num_registers=0)
    core = ViViTCore(cfg, 1).eval()
    assert core.stem is not None and not any("ChannelNorm" in type(m).__name__ for m in core.stem)
    assert isinstance(core.norm, torch.nn.Identity)
    x = _x()
    (core(x).pow(2).mean() * 1.0).backward()
    assert_all_grads(core)
    normed = ViViTCore(tiny_vivit(stem_channels=(3,)), 1).eval()
    with torch.no_grad():
        small, big = core(0.01 * x).norm(), core(10 * x).norm()
        n_small, n_big = normed(0.01 * x).norm(), normed(10 * x).norm()
    assert big > 20 * small  # the amplitude reaches the readout
    assert n_big < 5 * n_small  # per-token norms divide it out


@pytest.mark.parametrize("parallel", [True, False])
def test_qk_norm_makes_attention_blind_to_the_scale_of_q_and_k(parallel: bool) -> None:
    # With QK-norm the logits depend on the directions of q and k only: scaling the q and k
    # projections changes nothing; without it, it sharpens the attention.
    x = torch.randn(3, 7, 32)
    for qk_norm in (True, False):
        cfg = tiny_vivit(parallel=parallel, qk_norm=qk_norm)
        block = (ParallelBlock if parallel else SequentialBlock)(
            32,
            2,
            mlp_ratio=2.0,
            mlp="gelu",
            norm="rms",
            dropout=0.0,
            drop_path=0.0,
            causal=True,
            qk_norm=cfg.qk_norm,
        ).eval()
        proj = block.in_proj if isinstance(block, ParallelBlock) else block.qkv
        with torch.no_grad():
            base = block(x)
            proj.weight[: 2 * 32] *= 7.0  # the q and k rows
            scaled = block(x)
        if qk_norm:
            torch.testing.assert_close(scaled, base, atol=1e-5, rtol=1e-5)
        else:
            assert not torch.allclose(scaled, base, atol=1e-3)


@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_qk_norm_gives_the_same_features_on_every_backend(
    monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    # QK-norm runs before the backend call, so every backend (and the attention-map path) sees
    # the same normed q and k.
    core = ViViTCore(tiny_vivit(qk_norm=True, num_spatial_blocks=2), 1).eval()
    x = _x()
    with torch.no_grad():
        monkeypatch.setenv("VIVIT_HPO_ATTENTION", "math")
        reference = core(x)
        monkeypatch.setenv("VIVIT_HPO_ATTENTION", backend)
        torch.testing.assert_close(core(x), reference, atol=1e-5, rtol=1e-5)
        feats, maps = core(x, return_attention=True)
    torch.testing.assert_close(feats, reference, atol=1e-5, rtol=1e-5)
    for m in maps.spatial + maps.temporal:
        torch.testing.assert_close(m.sum(-1), torch.ones(m.shape[:-1]))
    assert (maps.temporal[0].triu(1) == 0).all()


def test_context_is_added_per_temporal_token_and_stays_causal() -> None:
    core = ViViTCore(tiny_vivit(), 1).eval()
    x = _x()
    ctx = torch.randn(2, 4, 32)
    with torch.no_grad():
        base = core(x, context=ctx)
        assert base.shape == (2, 32, 4, 6, 4) and not torch.allclose(base, core(x))
        torch.testing.assert_close(core(x, context=torch.zeros(2, 4, 32)), core(x))
        ctx2 = ctx.clone()
        ctx2[:, 2] += 1.0  # temporal token 2's context: tokens 0 and 1 never see it
        diff = (core(x, context=ctx2) - base).abs().amax(dim=(0, 1, 3, 4))
    assert (diff[:2] == 0).all() and (diff[2:] > 0).all()
    with pytest.raises(ValueError, match=r"expected \(B, T_p, D\)"):
        core(x, context=torch.zeros(2, 3, 32))
    ctx.requires_grad_(True)
    core.train()(x, context=ctx).pow(2).mean().backward()
    assert ctx.grad is not None and ctx.grad.abs().sum() > 0


def test_non_causal_core_leaks_the_future() -> None:
    # The causality test can fail: without the mask, early tokens see later frames.
    core = ViViTCore(tiny_vivit(causal=False), 1).eval()
    x = _x()
    x2 = x.clone()
    x2[:, :, -1] += 1.0
    with torch.no_grad():
        diff = (core(x2) - core(x)).abs().amax(dim=(0, 1, 3, 4))
    assert diff[0] > 0


def test_num_kept_tokens() -> None:
    assert num_kept_tokens(10, 0.1) == 9  # not 10 from 9.000000000000002
    assert num_kept_tokens(24, 0.5) == 12
    assert num_kept_tokens(5, 0.3) == 4  # ceil(3.5)
    assert num_kept_tokens(3, 0.9) == 1


def test_patch_dropout_fills_dropped_positions_with_their_nearest_kept_token() -> None:
    core = ViViTCore(tiny_vivit(patch_dropout=0.5), 1)
    x = _x(3)
    torch.manual_seed(0)
    out = core.train()(x)
    assert out.shape == (3, 32, 4, 6, 4)
    cells = out.flatten(3)  # (B, D, T_p, S)
    # Every position holds a real token's features (never zeros), and the positions that share
    # a token do so at every time step: 12 of the 24 positions are distinct tokens.
    assert (cells.abs().amax(dim=1) > 0).all()
    for b in range(3):
        sig = cells[b].permute(2, 0, 1).reshape(24, -1)  # (S, D*T_p)
        distinct = torch.unique(sig, dim=0).shape[0]
        assert distinct == num_kept_tokens(24, 0.5)
    first = cells[0].permute(2, 0, 1).reshape(24, -1)
    second = cells[1].permute(2, 0, 1).reshape(24, -1)
    same0 = (first[:, None] == first[None]).all(-1)
    same1 = (second[:, None] == second[None]).all(-1)
    assert not torch.equal(same0, same1)  # a fresh subset per sample
    out.sum().backward()
    assert_all_grads(core)


def test_patch_dropout_train_and_eval_features_have_the_same_statistics() -> None:
    # The readout is scored on evaluation features: in training it must read features of the
    # same size, not a grid that is half zeros.
    core = ViViTCore(tiny_vivit(patch_dropout=0.5), 1)
    x = _x(16)
    with torch.no_grad():
        train = core.train()(x)
        evaluation = core.eval()(x)
    ratio = float(train.square().mean() / evaluation.square().mean())
    assert 0.8 < ratio < 1.25, ratio
    # The share of (sample, position) cells with no features at all is zero in both.
    assert float((train.abs().amax(dim=(1, 2)) == 0).float().mean()) == 0.0


def test_patch_dropout_rope_rotates_kept_tokens_by_their_own_positions() -> None:
    core = ViViTCore(tiny_vivit(), 1)  # 2 registers, head dim 16
    cos_full, sin_full = core._spatial_rope(6, 4, None, 3, torch.device("cpu"))
    assert cos_full.shape == (2 + 24, 8)
    assert (cos_full[:2] == 1).all() and (sin_full[:2] == 0).all()  # registers: not rotated
    keep = torch.tensor([[5, 0, 23], [7, 8, 1]])  # (B=2, S_k=3)
    cos, sin = core._spatial_rope(6, 4, keep, 3, torch.device("cpu"))
    assert cos.shape == (2 * 3, 1, 2 + 3, 8)  # (B*T, 1, R + S_k, d/2), sample-major
    for b in range(2):
        for t in range(3):
            row = b * 3 + t
            torch.testing.assert_close(cos[row, 0, 2:], cos_full[2 + keep[b]])
            torch.testing.assert_close(sin[row, 0, 2:], sin_full[2 + keep[b]])
            assert (cos[row, 0, :2] == 1).all()


def test_attention_maps_refuse_patch_dropout_in_training() -> None:
    core = ViViTCore(tiny_vivit(patch_dropout=0.5), 1).train()
    with pytest.raises(ValueError, match=r"call core.eval\(\) first"):
        core(_x(), return_attention=True)


def test_gradient_checkpointing_gives_the_same_grads() -> None:
    cfg = tiny_vivit(num_spatial_blocks=2, num_temporal_blocks=2)
    plain = ViViTCore(cfg, 1)
    ckpt = copy.deepcopy(plain)
    ckpt.grad_checkpointing = True
    x = _x()
    for m in (plain, ckpt):
        m(x).pow(2).sum().backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        assert q.grad is not None
        torch.testing.assert_close(q.grad, p.grad, msg=name)
    assert ViViTCore(tiny_vivit(grad_checkpointing=True), 1).grad_checkpointing


def test_learned_pos_embed_handles_other_frame_sizes() -> None:
    core = ViViTCore(tiny_vivit(pos_embed="learned"), 1, max_input=SIZE)
    assert core(_x(1, (7, 9, 12))).shape == (1, 32, 4, 4, 4)
    assert core(_x(1, (5, 13, 10))).shape == (1, 32, 3, 6, 4)


def test_bf16_autocast_runs() -> None:
    core = ViViTCore(tiny_vivit(patch_dropout=0.25), 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = core.train()(_x())
    assert torch.isfinite(out).all()


def test_attention_maps() -> None:
    cfg = tiny_vivit(num_spatial_blocks=2, num_temporal_blocks=1, patch_dropout=0.5)
    core = ViViTCore(cfg, 1).train()
    x = _x()
    maps = collect_attention(core, x)
    assert core.training  # mode restored
    assert len(maps.spatial) == 2 and len(maps.temporal) == 1
    assert maps.spatial[0].shape == (2, 2 + 24, 2 + 24)  # heads, R + S (no patch dropout)
    assert maps.temporal[0].shape == (2, 4, 4)
    for m in maps.spatial + maps.temporal:
        torch.testing.assert_close(m.sum(-1), torch.ones(m.shape[:-1]))
    assert (maps.temporal[0].triu(1) == 0).all()  # causal
    assert maps.spatial_entropy.shape == (2, 2) and maps.temporal_entropy.shape == (1, 2)
    # Entropy is between 0 and log(number of keys).
    assert (maps.spatial_entropy > 0).all()
    assert (maps.spatial_entropy <= torch.log(torch.tensor(26.0))).all()
    mass = maps.register_mass()
    assert mass.shape == (2, 2) and ((mass > 0) & (mass < 1)).all()
    assert maps.grid == (4, 6, 4) and maps.num_registers == 2
    # The attention path gives the same features as the fast path.
    core.eval()
    with torch.no_grad():
        feats, _ = core(x, return_attention=True)
        torch.testing.assert_close(feats, core(x), atol=1e-5, rtol=1e-5)


def test_register_mass_is_zero_without_registers() -> None:
    maps = collect_attention(ViViTCore(tiny_vivit(num_registers=0), 1), _x())
    assert (maps.register_mass() == 0).all()


def test_a_separable_tokenizer_is_the_full_tubelet_of_its_low_rank_kernel() -> None:
    """``tokenizer_rank`` r: r spatial filters then a temporal conv, the same map as a full
    Conv3d whose kernel is the sum of r outer products of a time course and a spatial filter."""
    tok = TubeletTokenizer(2, 8, (4, 5, 5), (2, 3, 3), rank=3)
    assert tok.spatial is not None and tok.frame_filters is tok.spatial.weight
    full = TubeletTokenizer(2, 8, (4, 5, 5), (2, 3, 3))
    with torch.no_grad():
        s = tok.spatial.weight[:, :, 0]  # (r, C, kh, kw)
        t = tok.proj.weight[:, :, :, 0, 0]  # (D, r, kt)
        full.proj.weight.copy_(torch.einsum("drt,rchw->dcthw", t, s))
        full.proj.bias.copy_(tok.proj.bias)
    x = torch.randn(2, 2, 11, 13, 14)
    (a, grid_a), (b, grid_b) = tok(x), full(x)
    assert grid_a == grid_b
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # Fewer parameters than the full kernel, and the smoothness penalty is on its spatial filters.
    assert sum(p.numel() for p in tok.parameters()) < sum(p.numel() for p in full.parameters())
    core = ViViTCore(tiny_vivit(tokenizer_rank=2, laplace=0.5), 1)
    assert core.tokenizer.frame_filters.shape[2] == 1
    torch.testing.assert_close(core.regularizer(), 0.5 * laplace_l2(core.tokenizer.spatial.weight))
