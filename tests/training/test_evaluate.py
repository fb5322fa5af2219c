from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import vivit_hpo.training.loop as loop
from vivit_hpo.config import load_run_config
from vivit_hpo.data import load_sessions
from vivit_hpo.errors import ConfigError
from vivit_hpo.training import Trainer, predict

TINY = [
    "model.core.embed_dim=16",
    "model.core.num_heads=2",
    "model.core.num_spatial_blocks=1",
    "model.core.num_temporal_blocks=1",
    "model.core.num_registers=1",
    "model.modulator.hidden_dim=4",
    "data.num_lags=6",
    "data.max_val_bins=60",
    "train.epochs=1",
    "train.steps_per_epoch=1",
]

# Temporal strides 2 and 4, clips and windows, other batch sizes and seeds.
TRIALS = [
    [
        "model.core.kernel_size=[2,4,4]",
        "model.core.stride=[2,4,4]",
        "data.clip_frames=14",
        "train.batch_size=16",
        "train.seed=0",
    ],
    [
        "model.core.kernel_size=[4,4,4]",
        "model.core.stride=[4,4,4]",
        "data.clip_frames=18",
        "train.batch_size=3",
        "train.seed=7",
    ],
    [
        "model.core.kernel_size=[2,4,4]",
        "model.core.stride=[2,4,4]",
        "train.batch_size=8",
        "train.seed=3",
    ],
]


def test_capped_validation_scores_the_same_bins_in_every_trial(
    sim_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What each trainer's validation scored: its arguments, put through predict for the bins.
    seen: list[dict[str, np.ndarray]] = []

    def spy(model: Any, data: Any, split: str, batch_size: int, **kw: Any) -> Any:
        preds = predict(model, data, split, batch_size, **kw)
        seen.append({name: p.bins for name, p in preds.items()})
        return {name: p.score for name, p in preds.items()}

    monkeypatch.setattr(loop, "evaluate", spy)
    data = None
    for extra in TRIALS:
        cfg = load_run_config(None, [*TINY, *extra])
        data = data or load_sessions([sim_dir], cfg.data)
        trainer = Trainer(cfg, data, device="cpu")
        assert trainer.clips.stride in (1, 2, 4)
        list(trainer.epochs())
    assert data is not None
    assert len(seen) == len(TRIALS)
    first = seen[0]
    assert set(first) == set(data.names)
    for name, bins in first.items():
        assert 0 < bins.size <= 60 and np.unique(bins).size == bins.size
        assert set(bins.tolist()) <= set(data.sample_bins(name, "val").tolist())
    for other in seen[1:]:
        assert set(other) == set(first)
        for name in first:
            assert other[name].tolist() == first[name].tolist(), name


def test_an_old_config_with_max_val_batches_names_the_replacement() -> None:
    with pytest.raises(ConfigError, match=r"train\.max_val_batches.*data\.max_val_bins"):
        load_run_config(None, ["train.max_val_batches=4"])


def test_on_batch_is_called_after_every_batch(sim_dir: Path) -> None:
    # A long pass shows its progress (the study's stall watchdog marks it per batch).
    cfg = load_run_config(None, [*TINY, *TRIALS[0]])
    data = load_sessions([sim_dir], cfg.data)
    trainer = Trainer(cfg, data, device="cpu")
    calls: list[int] = []
    predict(trainer.model, data, "test", 16, on_batch=lambda: calls.append(1))
    batches = data.with_clips(trainer.model.clips).batches("test", 16, shuffle=False, seed=0)
    assert len(calls) == sum(1 for _ in batches) > 1
