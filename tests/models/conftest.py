"""Fixtures for the model tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from the same seed and the automatic attention backend."""
    torch.manual_seed(0)
    monkeypatch.delenv("VIVIT_HPO_ATTENTION", raising=False)
