"""The reference training step (``../shared/reference/ref_vivit_bench.py``), in this process.

The reference file is read-only and lives outside the repository; it is imported from its path
(never copied). Its model is timed with the same harness, input size and batch as ours. Its own
step is mirrored line for line (its ``bench()`` calls ``torch.cuda.synchronize`` and so cannot
run on the CPU): bf16 autocast on CUDA, ``poisson_nll_loss`` on every time token, backward, clip
at 1.0, AdamW (lr 3e-4, weight decay 0.05, fused on CUDA).

The reference is configured from our config: the same width, block counts, registers and
tubelet, and its own head size of 64 (``heads = embed_dim / 64``) with its GELU MLP of 4 D, so
``configs/vivit_small.yaml`` and ``vivit_baseline.yaml`` map onto the reference's ``small`` and
``baseline`` rows of ``../shared/performance.md``.
"""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel

from vivit_hpo import settings
from vivit_hpo.bench.backends import sdpa_pin
from vivit_hpo.bench.workload import NUM_BATCHES, Workload
from vivit_hpo.config import ViViTConfig
from vivit_hpo.errors import ConfigError

__all__ = [
    "REFERENCE_ENV",
    "build_reference",
    "default_reference_path",
    "load_reference",
    "reference_kwargs",
]

REFERENCE_ENV = settings.REFERENCE.name
_REF_HEAD_DIM = 64


def default_reference_path() -> Path:
    """``$VIVIT_HPO_REFERENCE``, else ``<repo>/../shared/reference/ref_vivit_bench.py``
    (:data:`vivit_hpo.settings.REFERENCE`)."""
    return settings.REFERENCE.get()


def load_reference(path: Path, device: torch.device) -> ModuleType:
    """Import the reference file as a fresh module bound to ``device``.

    The file reads ``DEV`` once at import (its RoPE tables go there), so it is set for the
    import and restored after; a fresh module object is made on every call, so a CPU import
    never leaks into a later CUDA run. The file also turns on TF32 at import; those two global
    flags are restored, so both models run under the same flags.

    Raises:
        ConfigError: the file is missing or does not define ``ViViT`` and ``flops_per_sample``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"reference benchmark {path} not found; pass --reference-path or set "
            f"{REFERENCE_ENV} to ref_vivit_bench.py"
        )
    spec = importlib.util.spec_from_file_location(f"_vivit_ref_{id(path)}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"reference benchmark {path} cannot be imported; pass a .py file")
    module = importlib.util.module_from_spec(spec)
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        with settings.env_override("DEV", str(device)):  # the reference file's own variable
            spec.loader.exec_module(module)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    for name in ("ViViT", "flops_per_sample"):
        if not hasattr(module, name):
            raise ConfigError(
                f"reference benchmark {path} defines no {name}; is it the right file?"
            )
    return module


def reference_kwargs(core: ViViTConfig, *, channels: int, num_units: int) -> dict[str, object]:
    """Constructor arguments of the reference ``ViViT`` matching our core config."""
    if tuple(core.stride) != tuple(core.kernel_size):
        raise ConfigError(
            f"--reference: the reference has non-overlapping tubelets, but stride {core.stride} "
            f"!= kernel_size {core.kernel_size}; bench this config without --reference"
        )
    d = core.embed_dim
    heads = d // _REF_HEAD_DIM if d % _REF_HEAD_DIM == 0 else core.num_heads
    return {
        "d": d,
        "heads": heads,
        "ns": core.num_spatial_blocks,
        "nt": core.num_temporal_blocks,
        "k": tuple(core.kernel_size),
        "in_ch": channels,
        "n_neurons": num_units,
        "registers": core.num_registers,
    }


def build_reference(
    module: ModuleType,
    core: ViViTConfig,
    *,
    batch_size: int,
    input_size: tuple[int, int, int],
    num_units: int,
    device: torch.device,
    compile: bool,
    backend: str | None,
) -> Workload:
    """The reference training step at our sizes.

    Args:
        module: from :func:`load_reference`.
        core: our core config (see :func:`reference_kwargs`).
        batch_size: B.
        input_size: (T, H, W); the reference's Conv3d drops frames and pixels that do not fill
            a tubelet (ours pads instead), so its token grid can be smaller than ours.
        num_units: N.
        device: where to train.
        compile: ``torch.compile`` the model, as its compiled rows do.
        backend: our attention backend choice; "math" and the ``sdpa-*`` pins pin the
            reference's SDPA kernel the same way, anything else leaves its SDPA on auto (it has
            no flash-attn path).
    """
    kw = reference_kwargs(core, channels=1, num_units=num_units)
    torch.manual_seed(0)
    model = module.ViViT(**kw).to(device)
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.05, fused=fused)
    fn = torch.compile(model) if compile else model
    kt, kh, kw_ = core.kernel_size
    t, h, w = input_size
    tokens_t, tokens_h, tokens_w = t // kt, h // kh, w // kw_
    if tokens_t < 1 or tokens_h < 1 or tokens_w < 1:
        raise ConfigError(f"--reference: input {input_size} is smaller than one tubelet")
    xs = [torch.randn(batch_size, 1, t, h, w, device=device) for _ in range(NUM_BATCHES)]
    ys = [
        torch.poisson(torch.rand(batch_size, tokens_t, num_units, device=device))
        for _ in range(NUM_BATCHES)
    ]
    amp = device.type == "cuda"
    pinned = sdpa_pin(backend, for_reference=True)

    def step(i: int) -> torch.Tensor:
        ctx = sdpa_kernel([pinned]) if pinned is not None else contextlib.nullcontext()
        with ctx, torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            r = fn(xs[i % NUM_BATCHES])
            loss = F.poisson_nll_loss(r.float(), ys[i % NUM_BATCHES], log_input=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def close() -> None:
        xs.clear()
        ys.clear()

    flops = module.flops_per_sample(
        kw["d"],
        kw["ns"],
        kw["nt"],
        tokens_t,
        tokens_h * tokens_w,
        reg=kw["registers"],
    )
    return Workload(
        name="reference",
        label=f"ref d{kw['d']} h{kw['heads']} {kw['ns']}+{kw['nt']}",
        step=step,
        batch_size=batch_size,
        flops_per_sample=float(flops),
        num_params=sum(p.numel() for p in model.parameters()),
        info={
            "attention_backend": "sdpa"
            if pinned is None
            else (backend if backend != "math" else "sdpa-math"),
            "amp": "bf16" if amp else "off",
            "fused_adamw": fused,
            "token_grid": [tokens_t, tokens_h, tokens_w],
            "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()},
        },
        close=close,
    )
