"""The training loop: one :class:`EpochReport` per epoch, and nothing of Optuna.

A caller iterates ``Trainer(cfg, data, ...).epochs()``; a study's objective turns each report
into ``trial.report`` / ``should_prune``, the CLI into a table. Everything a resumed run needs
(model, optimiser, step count, RNG, epoch, best scores, the weights' moving average) is in
``checkpoints/last.pt``, written after every epoch, so a run that is stopped at any point
continues exactly where its last epoch ended. A caller that must know of an epoch before any
file holds it (a study's epoch log) passes ``before_commit``: a run stopped after it and before
the commit trains that epoch again.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vivit_hpo._io import atomic_write_text
from vivit_hpo.config import RunConfig, parse_run_config
from vivit_hpo.data import Batch, SessionSet
from vivit_hpo.data.stream import prefetch
from vivit_hpo.errors import ConfigError, DataError, NonFiniteLossError
from vivit_hpo.metrics import mean_over_sessions
from vivit_hpo.models import EncodingModel, build_model
from vivit_hpo.models.encoder import clip_geometry
from vivit_hpo.training.checkpoint import (
    best_checkpoints,
    resume_state,
    save_checkpoint,
    write_run_files,
)
from vivit_hpo.training.ema import EMA
from vivit_hpo.training.evaluate import evaluate
from vivit_hpo.training.schedule import build_optimizer, warmup_cosine

__all__ = ["EpochReport", "Trainer", "accumulation_group", "poisson_loss", "resolve_device"]


@dataclass(frozen=True)
class EpochReport:
    """What one epoch did. ``val_score`` is the objective (``train.objective``): ``val_bps``
    (mean over sessions of session BPS) or ``val_corr`` (of the mean per-unit correlation; -inf
    where no unit's is defined, a model whose rates do not vary).

    ``samples_per_s`` counts training clips (windows in the one-target mode) per second,
    ``bins_per_s`` the target bins they trained (what a run buys); ``clip_frames`` and
    ``targets_per_clip`` say which mode trained (1 target per clip: windows).
    """

    epoch: int  # 1-based
    train_loss: float
    val_bps: float
    val_bps_per_session: dict[str, float]
    val_pooled_bps: float
    val_corr: float
    samples_per_s: float
    bins_per_s: float
    clip_frames: int
    targets_per_clip: int
    peak_memory_mb: float
    grad_norm: float
    lr: float
    train_seconds: float  # the training steps alone
    seconds: float  # the whole epoch, validation included
    is_best: bool
    val_score: float = math.nan  # the objective's value this epoch (is_best compares it)
    # Sessions left out of val_bps (and of val_bps_per_session): no valid validation spike.
    val_sessions_without_spikes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a CUDA device that is not there is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"--device {device!r}: expected auto, cpu, cuda or cuda:i") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here"
            )
    elif dev.type != "cpu":
        raise ConfigError(f"--device {device!r}: expected auto, cpu, cuda or cuda:i")
    return dev


def poisson_loss(rates: torch.Tensor, counts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean Poisson negative log-likelihood (up to ln y!) over the valid entries.

    Args:
        rates: (B, P, N) (or any shape) predicted rates, > 0.
        counts: observed counts, the same shape.
        mask: 1 where the count is valid (and its bin predicted), the same shape.
    """
    nll = F.poisson_nll_loss(rates, counts, log_input=False, full=False, reduction="none")
    return (nll * mask).sum() / mask.sum().clamp(min=1.0)


def accumulation_group(index: int, batches: int, grad_accum: int) -> int:
    """Batches in the gradient-accumulation group of an epoch's ``index``-th (0-based) batch.

    ``grad_accum``, except in the epoch's last group when ``batches`` is not a multiple of it:
    that group holds what is left, and its gradient is the mean over those batches only.
    """
    start = index - index % grad_accum
    return min(grad_accum, batches - start)


def _stored_config(tree: Any) -> dict[str, Any] | None:
    """A checkpoint's run config with the keys added since it was written at their defaults
    (so that a run resumes across a version that added a key); None when it does not parse."""
    try:
        return parse_run_config(tree, "checkpoint").to_dict()
    except ConfigError:
        return None


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is KiB on Linux and bytes on macOS: the process's peak resident memory.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


class Trainer:
    """Trains one encoding model on a :class:`SessionSet`.

    Args:
        cfg: the run config.
        data: the sessions (validated and loaded).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:i``.
        run_dir: where checkpoints and metrics go; None trains without writing anything.
            If ``run_dir/checkpoints/last.pt`` exists the run resumes from it (from the newest
            ``epochNNN.pt`` that loads when it does not, else from scratch: ``resume_state``).
        on_step: called as ``on_step(batch_index, batches_per_epoch)`` after each batch
            (a progress bar hook).
        before_commit: called with each epoch's report once it is validated and before the
            epoch is committed (its ``metrics.json`` row and checkpoints) and yielded; an error
            it raises stops the run with the epoch uncommitted.
    """

    def __init__(
        self,
        cfg: RunConfig,
        data: SessionSet,
        *,
        device: str | torch.device = "auto",
        run_dir: str | Path | None = None,
        on_step: Callable[[int, int], None] | None = None,
        before_commit: Callable[[EpochReport], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = resolve_device(device)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.on_step = on_step
        self.before_commit = before_commit
        if data.num_samples("train") == 0:
            raise ConfigError(
                f"no training samples with data.num_lags={cfg.data.num_lags}; "
                "use fewer lags or longer blocks"
            )
        if data.num_samples("val") == 0:
            raise ConfigError(
                "no validation samples; give the files a `split` with 1s or more blocks"
            )
        torch.manual_seed(cfg.train.seed)
        if self.device.type == "cuda":
            # TF32 for the fp32 matmuls left outside autocast (the readout, the optimiser).
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        # Batches come out on the training device; the data themselves move there only as
        # data.device_resident allows (SessionSet.to decides).
        self.clips = clip_geometry(cfg)
        self.data = data.to(self.device).with_clips(self.clips)
        self.model: EncodingModel = build_model(cfg.model, data.metas, self.clips).to(self.device)
        _, readout = self.model.param_groups()
        self.optimizer = build_optimizer(self.model.core, readout, cfg.train, self.device)
        # The average is copied before compile: a copy of a compiled module is not one to trust.
        self.ema: EMA | None = None
        if cfg.train.ema_decay is not None:
            self.ema = EMA(self.model, cfg.train.ema_decay)
        if cfg.train.compile:
            # The core alone, in place (its state_dict keys unchanged): the per-session readouts
            # and modulator stay eager, so sessions of other sizes and units do not each add a
            # compiled graph; the core's varying frame sizes become dynamic after the first
            # recompile (PyTorch's automatic dynamic shapes).
            self.model.core.compile()
            if self.ema is not None:
                self.eval_model.core.compile()
        self.amp = cfg.train.amp == "bf16" or (
            cfg.train.amp == "auto" and self.device.type == "cuda"
        )

        t = cfg.train
        # steps_per_epoch counts optimiser steps, as the schedule does: with grad_accum > 1 an
        # epoch reads grad_accum times as many batches.
        if t.steps_per_epoch is not None:
            self.batches_per_epoch = t.steps_per_epoch * t.grad_accum
        else:
            self.batches_per_epoch = self.data.num_train_batches(t.batch_size)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / t.grad_accum)
        self.total_steps = self.steps_per_epoch * t.epochs
        self.warmup_steps = round(t.warmup_epochs * self.steps_per_epoch)

        self.epoch = 0
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best: list[tuple[float, int]] = []  # (val_score, epoch), best first
        if self.run_dir is not None:
            state = resume_state(self.run_dir / "checkpoints", self.device)
            if state is not None:
                self._restore(state)
            else:
                write_run_files(self.run_dir, cfg, data.metas)

    # -- public -----------------------------------------------------------------------------

    @property
    def eval_model(self) -> EncodingModel:
        """The weights that are validated and kept as best: the moving average when
        ``train.ema_decay`` is set, else the trained model itself."""
        if self.ema is not None:
            average = self.ema.average
            assert isinstance(average, EncodingModel)
            return average
        return self.model

    @property
    def best_score(self) -> float:
        """The best epoch's objective value (``train.objective``); -inf before any epoch."""
        return self.best[0][0] if self.best else float("-inf")

    @property
    def best_epoch(self) -> int | None:
        return self.best[0][1] if self.best else None

    @property
    def stopped_early(self) -> bool:
        patience = self.cfg.train.early_stopping_patience
        return bool(patience and self.best and self.epoch - self.best[0][1] >= patience)

    def epochs(self) -> Iterator[EpochReport]:
        """Train epoch by epoch, yielding a report after each; stops at the budget or early."""
        while self.epoch < self.cfg.train.epochs and not self.stopped_early:
            yield self._run_epoch()

    # -- one epoch --------------------------------------------------------------------------

    def _set_lr(self) -> float:
        scale = warmup_cosine(
            self.step,
            warmup=self.warmup_steps,
            total=self.total_steps,
            floor=self.cfg.train.min_lr_ratio,
        )
        for g in self.optimizer.param_groups:
            g["lr"] = g["peak_lr"] * scale
        return self.optimizer.param_groups[0]["lr"]

    def train_step(self, batch: Batch, group: int | None = None) -> torch.Tensor:
        """Forward and backward of one batch (gradients accumulate); returns the detached loss.

        The loss is divided by ``group``, the size of the accumulation group the batch is in
        (None: ``grad_accum``), for the backward pass only, so a group's gradient is the mean
        of its batches' gradients whatever its size; no host sync here. The loss is computed
        in fp32, outside autocast.
        """
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            rates = self.model(batch.stim, batch.session, batch.behavior)
        loss = poisson_loss(rates.float(), batch.robs, batch.dfs)
        loss = loss + self.model.regularizer(batch.session)
        (loss / (group or self.cfg.train.grad_accum)).backward()
        return loss.detach()

    def optimizer_step(self) -> torch.Tensor:
        """Clip, check and apply the accumulated gradients; returns the gradient norm.

        A NaN or Inf loss makes every gradient non-finite, so checking the norm here (one host
        sync per optimiser step) guards both before any weight is touched.
        """
        clip = self.cfg.train.clip_grad_norm
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip is not None else math.inf)
        if not torch.isfinite(norm):
            raise NonFiniteLossError(
                f"the loss or gradient became non-finite at epoch {self.epoch + 1}, step "
                f"{self.step}; lower train.lr or enable train.clip_grad_norm"
            )
        self._set_lr()
        self.optimizer.step()
        self.model.constrain_()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        return norm.detach()

    def _run_epoch(self) -> EpochReport:
        t = self.cfg.train
        self.model.train()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=self.device)
        norm_sum = torch.zeros((), device=self.device)
        n_samples = n_targets = n_batches = n_steps = 0
        # The next batches are gathered (read from the file, copied to the device) in a
        # background thread while this one trains.
        batches = prefetch(
            self.data.batches(
                "train",
                t.batch_size,
                shuffle=True,
                seed=t.seed * 100_003 + self.epoch,
                steps=self.batches_per_epoch,
            )
        )
        self.optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(batches):
            loss_sum += self.train_step(
                batch, accumulation_group(i, self.batches_per_epoch, t.grad_accum)
            )
            n_samples += len(batch)
            n_targets += batch.num_targets
            n_batches += 1
            if n_batches % t.grad_accum == 0 or n_batches == self.batches_per_epoch:
                norm_sum += self.optimizer_step()
                n_steps += 1
            if self.on_step is not None:
                self.on_step(i + 1, self.batches_per_epoch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        train_seconds = time.perf_counter() - start

        # A capped validation scores the same bins every epoch and in every trial of a study:
        # whole chunks drawn with the split's seed, whatever the clips, batch size or seed.
        d = self.cfg.data
        scores = evaluate(
            self.eval_model,
            self.data,
            "val",
            t.batch_size,
            max_bins=d.max_val_bins,
            seed=d.split_seed,
        )
        self.epoch += 1
        # A session whose validation bins hold no valid spike is left out of the mean, and named.
        val = mean_over_sessions(scores)
        if not val.per_session:
            raise DataError(
                f"no valid spike in the validation bins of any session ({', '.join(scores)}); "
                "give the files validation blocks with spikes, or raise data.max_val_bins"
            )
        per_session, val_bps = val.per_session, val.bps
        if not math.isfinite(val_bps):
            raise NonFiniteLossError(
                f"validation BPS is {val_bps} at epoch {self.epoch}; the model predicts "
                "non-finite rates: lower train.lr"
            )
        score = val_bps if self.cfg.train.objective == "bps" else val.corr
        if not math.isfinite(score):  # no unit's correlation is defined: never the best
            score = -math.inf
        is_best = score > self.best_score
        report = EpochReport(
            epoch=self.epoch,
            train_loss=float(loss_sum.item() / max(n_batches, 1)),
            val_bps=val_bps,
            val_bps_per_session=per_session,
            val_pooled_bps=val.pooled_bps,
            val_corr=val.corr,
            samples_per_s=n_samples / train_seconds,
            bins_per_s=n_targets / train_seconds,
            clip_frames=self.clips.frames,
            targets_per_clip=self.clips.num_targets,
            peak_memory_mb=_peak_memory_mb(self.device),
            grad_norm=float(norm_sum.item() / max(n_steps, 1)),
            lr=self.optimizer.param_groups[0]["lr"],
            train_seconds=train_seconds,
            seconds=time.perf_counter() - start,
            is_best=is_best,
            val_score=score,
            val_sessions_without_spikes=val.without_spikes,
        )
        if self.before_commit is not None:
            self.before_commit(report)
        self.history.append(report.to_dict())
        self.best = sorted([*self.best, (score, self.epoch)], reverse=True)
        if self.run_dir is not None:
            self._save(val_bps, score)
        return report

    # -- checkpoints ------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "best": [list(b) for b in self.best],
            "history": self.history,
            "config": self.cfg.to_dict(),
            "rng_cpu": torch.get_rng_state(),
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        if _stored_config(state.get("config")) != self.cfg.to_dict():
            raise ConfigError(
                f"{self.run_dir}: holds a run with another config; use a new --out folder "
                "or the same config to resume"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.best = [(float(v), int(e)) for v, e in state["best"]]
        self.history = list(state["history"])
        torch.set_rng_state(state["rng_cpu"].cpu())
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), self.device)

    def _save(self, val_bps: float, score: float) -> None:
        assert self.run_dir is not None
        t = self.cfg.train
        ckpt_dir = self.run_dir / "checkpoints"
        state = self._state()
        keep = {e for _, e in self.best[: t.keep_best]}
        if self.epoch in keep:
            # The weights that were validated: load_run, evaluate and export read them as is.
            validated = state.get("ema", state["model"])
            save_checkpoint(
                ckpt_dir / f"best-epoch{self.epoch:03d}.pt",
                {"model": validated, "epoch": self.epoch, "val_bps": val_bps, "val_score": score},
            )
            for epoch, path in best_checkpoints(ckpt_dir):
                if epoch not in keep:
                    path.unlink(missing_ok=True)
        if self.epoch % t.checkpoint_every == 0:
            save_checkpoint(ckpt_dir / f"epoch{self.epoch:03d}.pt", state)
        atomic_write_text(self.run_dir / "metrics.json", json.dumps(self.history, indent=1))
        # last.pt goes last: a run that dies before this line redoes the epoch on resume.
        save_checkpoint(ckpt_dir / "last.pt", state)
