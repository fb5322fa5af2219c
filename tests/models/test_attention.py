from __future__ import annotations

import pytest
import torch

import vivit_hpo.models.attention as attn_mod
from vivit_hpo.errors import ConfigError
from vivit_hpo.models.attention import attention, attention_backend, attention_weights


def _qkv(b: int = 2, h: int = 3, n: int = 7, d: int = 16) -> tuple[torch.Tensor, ...]:
    return tuple(torch.randn(b, h, n, d) for _ in range(3))


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_matches_math_path(causal: bool) -> None:
    q, k, v = _qkv()
    ref = attention(q, k, v, causal=causal, backend="math")
    out = attention(q, k, v, causal=causal, backend="sdpa")
    assert out.shape == (2, 3, 7, 16)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_sdpa_matches_math_path_with_other_key_length() -> None:
    q = torch.randn(2, 2, 5, 8)
    k, v = torch.randn(2, 2, 9, 8), torch.randn(2, 2, 9, 8)
    torch.testing.assert_close(
        attention(q, k, v, causal=False, backend="sdpa"),
        attention(q, k, v, causal=False, backend="math"),
        atol=1e-5,
        rtol=1e-5,
    )


def test_math_path_is_softmax_attention() -> None:
    q, k, v = _qkv(n=4, d=8)
    scores = q @ k.transpose(-2, -1) / 8**0.5
    mask = torch.ones(4, 4, dtype=torch.bool).triu(1)
    expected = scores.masked_fill(mask, float("-inf")).softmax(-1) @ v
    torch.testing.assert_close(attention(q, k, v, causal=True, backend="math"), expected)
    # The first query sees only the first key.
    torch.testing.assert_close(attention(q, k, v, causal=True, backend="math")[:, :, 0], v[:, :, 0])


def test_attention_weights_are_probabilities_and_causal() -> None:
    q, k, _ = _qkv(n=6)
    w = attention_weights(q, k, causal=True)
    assert w.shape == (2, 3, 6, 6)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 6))
    assert (w.triu(1) == 0).all()
    assert (w[..., torch.ones(6, 6, dtype=torch.bool).tril()] > 0).all()
    with pytest.raises(ValueError, match="as many keys as queries"):
        attention_weights(q, k[:, :, :4], causal=True)


def test_dropout_changes_math_output_only_when_asked() -> None:
    q, k, v = _qkv()
    base = attention(q, k, v, causal=False, backend="math")
    torch.testing.assert_close(
        attention(q, k, v, causal=False, dropout_p=0.0, backend="math"), base
    )
    assert not torch.allclose(attention(q, k, v, causal=False, dropout_p=0.5, backend="math"), base)


def test_auto_backend_on_cpu_is_sdpa_but_for_the_shortest_sequences() -> None:
    q = torch.randn(1, 1, attn_mod.CPU_MATH_MAX_LEN + 1, 8)
    assert attention_backend(q) == "sdpa"
    assert attention_backend(q.bfloat16()) == "sdpa"  # flash-attn needs CUDA
    # A window's 2 temporal tokens: PyTorch's CPU kernel costs more per sequence than the work.
    assert attention_backend(torch.randn(1, 1, 2, 8)) == "math"


@pytest.mark.parametrize("choice", ["sdpa", "math", "SDPA "])
def test_env_override(monkeypatch: pytest.MonkeyPatch, choice: str) -> None:
    monkeypatch.setenv("VIVIT_HPO_ATTENTION", choice)
    assert attention_backend(torch.randn(1, 1, 2, 8)) == choice.strip().lower()


def test_env_override_is_used_by_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    real = attn_mod._math_attention

    def spy(*args: object) -> torch.Tensor:
        calls.append(True)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(attn_mod, "_math_attention", spy)
    q, k, v = _qkv()
    attention(q, k, v, causal=True)
    assert not calls
    monkeypatch.setenv("VIVIT_HPO_ATTENTION", "math")
    attention(q, k, v, causal=True)
    assert calls


def test_bad_env_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIVIT_HPO_ATTENTION", "xformers")
    with pytest.raises(ConfigError, match="VIVIT_HPO_ATTENTION='xformers'"):
        attention_backend(torch.randn(1, 1, 2, 8))


def test_explicit_flash_attn_that_cannot_run_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIVIT_HPO_ATTENTION", "flash-attn")
    q = torch.randn(1, 1, 2, 8)
    with pytest.raises(ConfigError, match="flash-attn cannot be honoured"):
        attention_backend(q)
    with pytest.raises(ConfigError, match="flash-attn cannot be honoured"):
        attention(q, q, q, causal=False)
    monkeypatch.delenv("VIVIT_HPO_ATTENTION")
    with pytest.raises(ConfigError, match="flash-attn cannot run"):
        attention(q, q, q, causal=False, backend="flash-attn")


def test_flash_refusal_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend flash-attn is installed: the tensor checks must still refuse CPU and fp32 inputs.
    monkeypatch.setattr(attn_mod, "_flash_attn_func", lambda *a, **k: None)
    assert "CUDA" in (attn_mod._flash_refusal(torch.randn(1, 1, 2, 8)) or "")
    if torch.cuda.is_available():
        cuda = torch.randn(1, 1, 2, 8, device="cuda")
        assert "bf16/fp16" in (attn_mod._flash_refusal(cuda) or "")
        assert attn_mod._flash_refusal(cuda.bfloat16()) is None
