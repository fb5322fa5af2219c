"""Attention backend choices of the bench: the project's switch, and pinned SDPA kernels.

``--backend auto|flash-attn|sdpa|math`` sets the project's switch (``VIVIT_HPO_ATTENTION``) for
the run. ``--backend sdpa-cudnn|sdpa-efficient|sdpa-flash`` runs the ``sdpa`` path with
PyTorch's SDPA pinned to one kernel (for both models), to find the fastest kernel for a shape.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch.nn.attention import SDPBackend

from vivit_hpo import settings

__all__ = ["BACKENDS", "SDPA_PINS", "attention_override", "project_backend", "sdpa_pin"]

SDPA_PINS = {
    "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
    "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
    "sdpa-flash": SDPBackend.FLASH_ATTENTION,
}
BACKENDS = ("auto", "flash-attn", "sdpa", "math", *SDPA_PINS)


def project_backend(backend: str | None) -> str | None:
    """The value of ``VIVIT_HPO_ATTENTION`` for a bench ``--backend`` (None: leave it)."""
    if backend in SDPA_PINS:
        return "sdpa"
    return backend


def sdpa_pin(backend: str | None, *, for_reference: bool = False) -> SDPBackend | None:
    """The one SDPA kernel a bench ``--backend`` pins (None: SDPA chooses).

    ``sdpa-cudnn``, ``sdpa-efficient`` and ``sdpa-flash`` pin PyTorch's kernel for both models;
    ``math`` pins the reference's SDPA to its math kernel (ours runs its own math path).
    """
    if backend in SDPA_PINS:
        return SDPA_PINS[backend]
    if for_reference and backend == "math":
        return SDPBackend.MATH
    return None


@contextlib.contextmanager
def attention_override(backend: str | None) -> Iterator[None]:
    """Set ``VIVIT_HPO_ATTENTION`` for the bench ``backend`` inside the block, then restore."""
    value = project_backend(backend)
    if value is None:
        yield
        return
    with settings.ATTENTION.override(value):
        yield
