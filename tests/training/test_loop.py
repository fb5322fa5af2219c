from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from vivit_hpo.config import load_run_config
from vivit_hpo.data import Batch, load_sessions
from vivit_hpo.errors import ConfigError, DataError, NonFiniteLossError
from vivit_hpo.training import Trainer, accumulation_group, evaluate, load_run, poisson_loss

TINY = [
    "model.core.embed_dim=16",
    "model.core.num_heads=2",
    "model.core.num_spatial_blocks=1",
    "model.core.num_temporal_blocks=1",
    "model.core.kernel_size=[2,4,4]",
    "model.core.stride=[2,4,4]",
    "model.core.num_registers=1",
    "model.core.patch_dropout=0.25",
    "model.core.drop_path=0.1",
    "model.modulator.hidden_dim=4",
    "data.num_lags=6",
    "train.batch_size=16",
    "train.steps_per_epoch=6",
    "data.max_val_bins=64",
    "train.lr=3e-3",
]


def tiny_config(*extra: str):
    return load_run_config(None, [*TINY, *extra])


def test_poisson_loss_matches_hand_computation() -> None:
    rates = torch.tensor([[0.5, 2.0], [1.0, 0.1]])
    counts = torch.tensor([[1.0, 0.0], [3.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    expected = ((0.5 - math.log(0.5)) + 2.0 + (1.0 - 3 * math.log(1.0))) / 3
    assert poisson_loss(rates, counts, mask).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "mode",
    [[], ["data.clip_frames=14"], ["train.ema_decay=0.9"]],
    ids=["windows", "clips", "ema"],
)
def test_resume_gives_the_same_next_epoch(sim_dir: Path, tmp_path: Path, mode: list[str]) -> None:
    cfg = tiny_config("train.epochs=2", "train.early_stopping_patience=null", *mode)
    data = load_sessions([sim_dir], cfg.data)

    straight = Trainer(cfg, data, device="cpu", run_dir=tmp_path / "a")
    reports = list(straight.epochs())

    first = Trainer(cfg, data, device="cpu", run_dir=tmp_path / "b")
    next(first.epochs())
    del first  # the process "dies" after epoch 1; its last.pt is all that is left
    resumed = Trainer(cfg, data, device="cpu", run_dir=tmp_path / "b")
    assert resumed.epoch == 1
    again = list(resumed.epochs())

    assert len(again) == 1 and again[0].epoch == 2
    assert again[0].train_loss == reports[1].train_loss
    assert again[0].val_bps == reports[1].val_bps
    for a, b in ((straight.model, resumed.model), (straight.eval_model, resumed.eval_model)):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(p, q), name


def test_resume_refuses_another_config(sim_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config("train.epochs=1")
    data = load_sessions([sim_dir], cfg.data)
    list(Trainer(cfg, data, device="cpu", run_dir=tmp_path).epochs())
    with pytest.raises(ConfigError, match="another config"):
        Trainer(
            tiny_config("train.epochs=1", "train.lr=1e-2"), data, device="cpu", run_dir=tmp_path
        )


def test_a_torn_last_resumes_from_an_older_checkpoint_written_before_a_config_key(
    sim_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Both at once: last.pt is torn (the newest full checkpoint that loads is epoch002.pt) and
    # that checkpoint's config is from a version without keys added since (at their defaults).
    cfg = tiny_config("train.epochs=3", "train.checkpoint_every=1")
    data = load_sessions([sim_dir], cfg.data)
    first = Trainer(cfg, data, device="cpu", run_dir=tmp_path)
    epochs = first.epochs()
    next(epochs), next(epochs)
    del first, epochs  # the process "dies" after epoch 2
    ckpts = tmp_path / "checkpoints"
    last = ckpts / "last.pt"
    with open(last, "r+b") as f:  # torn: the first half of the file only
        f.truncate(last.stat().st_size // 2)
    older = torch.load(ckpts / "epoch002.pt", weights_only=True)
    del older["config"]["data"]["split_by"], older["config"]["train"]["objective"]
    del older["config"]["model"]["core"]["laplace"]
    torch.save(older, ckpts / "epoch002.pt")

    with caplog.at_level("WARNING", logger="vivit_hpo.training.checkpoint"):
        resumed = Trainer(cfg, data, device="cpu", run_dir=tmp_path)
    assert resumed.epoch == 2 and [h["epoch"] for h in resumed.history] == [1, 2]
    (line,) = caplog.messages
    assert "last.pt: not a readable checkpoint" in line
    assert line.endswith("resuming from epoch002.pt instead"), line
    assert [r.epoch for r in resumed.epochs()] == [3]


def test_checkpoints_keep_best_every_k_and_last(sim_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(
        "train.epochs=4",
        "train.keep_best=2",
        "train.checkpoint_every=2",
        "train.early_stopping_patience=null",
    )
    data = load_sessions([sim_dir], cfg.data)
    trainer = Trainer(cfg, data, device="cpu", run_dir=tmp_path)
    reports = list(trainer.epochs())
    ckpts = tmp_path / "checkpoints"
    best = sorted(p.name for p in ckpts.glob("best-epoch*.pt"))
    top2 = sorted(sorted(reports, key=lambda r: -r.val_bps)[:2], key=lambda r: r.epoch)
    assert best == [f"best-epoch{r.epoch:03d}.pt" for r in top2]
    assert sorted(p.name for p in ckpts.glob("epoch*.pt")) == ["epoch002.pt", "epoch004.pt"]
    assert (ckpts / "last.pt").is_file()
    assert not list(ckpts.glob("*.tmp"))
    history = json.loads((tmp_path / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert set(history[0]["val_bps_per_session"]) == set(data.names)

    _, model, metas = load_run(tmp_path)
    assert [m.name for m in metas] == data.names
    assert not model.training
    state = torch.load(ckpts / best[0], weights_only=True)
    assert set(state) == {"model", "epoch", "val_bps", "val_score"}


def test_clip_mode_trains_every_stride_th_bin_and_counts_them(
    sim_dir: Path, tmp_path: Path
) -> None:
    # num_lags 6, temporal stride 2: clips of 6 + 2 m frames; 19 rounds down to 18 (7 targets).
    cfg = tiny_config("train.epochs=1", "data.clip_frames=19")
    data = load_sessions([sim_dir], cfg.data)
    trainer = Trainer(cfg, data, device="cpu", run_dir=tmp_path)
    assert (trainer.clips.frames, trainer.clips.num_targets) == (18, 7)
    (report,) = list(trainer.epochs())
    assert (report.clip_frames, report.targets_per_clip) == (18, 7)
    # Whole clips wherever a block holds one: about 7 target bins per clip trained.
    assert 5 < report.bins_per_s / report.samples_per_s <= 7 + 1e-9
    (saved,) = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["clip_frames"] == 18 and saved["targets_per_clip"] == 7
    # The run directory evaluates in the same mode.
    _, model, _ = load_run(tmp_path)
    assert model.clips == trainer.clips


def test_non_finite_loss_stops_with_a_reason(sim_dir: Path) -> None:
    cfg = tiny_config("train.epochs=1")
    data = load_sessions([sim_dir], cfg.data)
    trainer = Trainer(cfg, data, device="cpu")
    with torch.no_grad():
        trainer.model.readout(data.names[0]).bias.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"lower train\.lr"):
        list(trainer.epochs())


def test_short_run_learns(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Transformers need data: 12,000 frames is about the least on which this one generalises
    # within a few hundred steps (3,000 frames only overfit).
    from vivit_hpo.data import synthesize

    out = tmp_path_factory.mktemp("sim-learn")
    synthesize(out, sessions=1, neurons=16, frames=12_000, size=(16, 16), seed=3)
    cfg = tiny_config(
        "train.epochs=4",
        "train.steps_per_epoch=60",
        "train.batch_size=64",
        "data.max_val_bins=null",
        "train.early_stopping_patience=null",
        "model.core.patch_dropout=0.0",
        "data.num_lags=8",
    )
    reports = list(Trainer(cfg, load_sessions([out], cfg.data), device="cpu").epochs())
    assert all(math.isfinite(r.train_loss) for r in reports)
    assert reports[-1].val_bps > reports[0].val_bps
    assert reports[-1].val_bps > 0.03


def _silence_validation(sim_dir: Path, out: Path, names: set[str]) -> Path:
    """A copy of the simulated sessions with every count of the named ones' validation bins 0."""
    import shutil

    import h5py

    out.mkdir()
    for path in sorted(sim_dir.glob("*.h5")):
        shutil.copy(path, out / path.name)
    data = load_sessions([out], tiny_config().data)
    for name in names:
        s = data.session(name)
        with h5py.File(s.path, "r+") as f:
            if "split" not in f:
                f.create_dataset("split", data=s.split)
            robs = f["robs"][()]
            robs[s.split == 1] = 0
            f["robs"][...] = robs
    return out


def test_a_session_without_validation_spikes_is_left_out_and_named(
    sim_dir: Path, tmp_path: Path
) -> None:
    names = load_sessions([sim_dir], tiny_config().data).names
    silent, other = names[0], names[1]
    out = _silence_validation(sim_dir, tmp_path / "data", {silent})
    cfg = tiny_config("train.epochs=1")
    data = load_sessions([out], cfg.data)
    (report,) = list(Trainer(cfg, data, device="cpu").epochs())
    assert report.val_sessions_without_spikes == (silent,)
    assert set(report.val_bps_per_session) == {other}
    assert report.val_bps == report.val_bps_per_session[other]
    assert math.isfinite(report.val_bps) and math.isfinite(report.val_pooled_bps)
    assert math.isfinite(report.val_corr)


def test_no_session_with_validation_spikes_is_a_data_error(sim_dir: Path, tmp_path: Path) -> None:
    names = load_sessions([sim_dir], tiny_config().data).names
    out = _silence_validation(sim_dir, tmp_path / "data", set(names))
    cfg = tiny_config("train.epochs=1")
    with pytest.raises(DataError, match=r"no valid spike.*" + ", ".join(names)):
        list(Trainer(cfg, load_sessions([out], cfg.data), device="cpu").epochs())


def test_steps_per_epoch_counts_optimiser_steps(sim_dir: Path) -> None:
    cfg = tiny_config("train.epochs=1", "train.steps_per_epoch=3", "train.grad_accum=2")
    seen: list[tuple[int, int]] = []
    trainer = Trainer(
        cfg,
        load_sessions([sim_dir], cfg.data),
        device="cpu",
        on_step=lambda i, n: seen.append((i, n)),
    )
    assert (trainer.steps_per_epoch, trainer.batches_per_epoch) == (3, 6)
    list(trainer.epochs())
    assert trainer.step == 3
    assert seen == [(i, 6) for i in range(1, 7)]


def test_accumulation_groups_of_an_epoch() -> None:
    sizes = [accumulation_group(i, 10, 4) for i in range(10)]
    assert sizes == [4] * 8 + [2] * 2
    assert [accumulation_group(i, 3, 1) for i in range(3)] == [1, 1, 1]


def test_a_short_last_accumulation_group_is_the_mean_of_its_batches(
    sim_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_config(
        "train.epochs=1",
        "train.grad_accum=4",
        "model.core.patch_dropout=0.0",
        "model.core.drop_path=0.0",
    )
    trainer = Trainer(cfg, load_sessions([sim_dir], cfg.data), device="cpu")
    trainer.batches_per_epoch = 6  # an epoch of a group of 4 batches, then one of 2
    model = trainer.model
    for name in trainer.data.names:
        # No jitter: a batch's gradient is then a function of the weights alone.
        model.readout(name).sigma.requires_grad_(False).zero_()

    batches: list[Batch] = []
    steps: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []
    train_step, optimizer_step = trainer.train_step, trainer.optimizer_step

    def spy_train(batch: Batch, group: int | None = None) -> torch.Tensor:
        batches.append(batch)
        return train_step(batch, group)

    def spy_optimizer() -> torch.Tensor:
        weights = {n: p.detach().clone() for n, p in model.state_dict().items()}
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        steps.append((weights, grads))
        return optimizer_step()

    monkeypatch.setattr(trainer, "train_step", spy_train)
    monkeypatch.setattr(trainer, "optimizer_step", spy_optimizer)
    list(trainer.epochs())
    assert len(batches) == 6 and len(steps) == 2

    weights, grads = steps[1]
    model.load_state_dict(weights)
    model.train()
    per_batch = []
    for b in batches[4:]:
        model.zero_grad(set_to_none=True)
        loss = poisson_loss(model(b.stim, b.session, b.behavior), b.robs, b.dfs)
        (loss + model.regularizer(b.session)).backward()
        per_batch.append(
            {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        )
    assert set(grads) == set(per_batch[0]) | set(per_batch[1])
    zero = torch.zeros(())
    for name, g in grads.items():
        mean = (per_batch[0].get(name, zero) + per_batch[1].get(name, zero)) / 2
        torch.testing.assert_close(g, mean.expand_as(g), rtol=1e-4, atol=1e-7, msg=name)


def test_ema_weights_are_validated_and_kept_as_best(sim_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config("train.epochs=1", "train.ema_decay=0.9")
    trainer = Trainer(cfg, load_sessions([sim_dir], cfg.data), device="cpu", run_dir=tmp_path)
    (report,) = list(trainer.epochs())
    assert trainer.ema is not None and trainer.eval_model is not trainer.model
    t, d = cfg.train, cfg.data

    def val_bps(model: torch.nn.Module) -> float:
        scores = evaluate(
            model, trainer.data, "val", t.batch_size, max_bins=d.max_val_bins, seed=d.split_seed
        )
        return sum(s.bps for s in scores.values()) / len(scores)

    assert report.val_bps == val_bps(trainer.eval_model)
    assert report.val_bps != val_bps(trainer.model)
    # The best checkpoint holds the average, and load_run gives it back as a plain model.
    _, loaded, _ = load_run(tmp_path)
    for name, p in trainer.eval_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], p), name
    assert val_bps(loaded) == report.val_bps
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert set(last["ema"]) == set(last["model"])
