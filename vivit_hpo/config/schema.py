"""The run config's parts: one frozen, validated pydantic model per component.

The model's core (:class:`ViViTConfig`, :class:`CNNConfig`, :class:`CNN2DConfig` or
:class:`LNConfig`, picked by ``kind``), its :class:`ReadoutConfig` and :class:`ModulatorConfig`,
in :class:`ModelConfig`; :class:`DataConfig`; :class:`TrainConfig`; and :class:`RunConfig`, which
holds the three sections. Every key has a default. Reading them from YAML and ``--set`` is
:mod:`vivit_hpo.config.parse`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

__all__ = [
    "CNN2DConfig",
    "CNNConfig",
    "CoreConfig",
    "DataConfig",
    "LNConfig",
    "ModelConfig",
    "ModulatorConfig",
    "ReadoutConfig",
    "RunConfig",
    "TrainConfig",
    "Triple",
    "ViViTConfig",
    "core_kind",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Triple = tuple[int, int, int]


class ViViTConfig(_Frozen):
    """The factorised ViViT core of the roadmap (spatial, then causal temporal attention)."""

    kind: Literal["vivit"] = "vivit"
    embed_dim: int = Field(192, ge=8)
    num_heads: int = Field(4, ge=1)
    num_spatial_blocks: int = Field(4, ge=1)
    num_temporal_blocks: int = Field(4, ge=1)
    kernel_size: Triple = (4, 4, 4)  # tubelet (T, H, W)
    stride: Triple = (4, 4, 4)
    # The tubelet kernel as a sum of this many space-time separable kernels (spatial filters,
    # then a temporal conv mixing them into embed_dim); null for the full (T, H, W) kernel.
    tokenizer_rank: int | None = Field(None, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    mlp: Literal["swiglu", "gelu"] = "swiglu"
    # The blocks' pre-norms (and the token and final norms that follow `norm`): per token
    # (rms, layer), which divides out each token's contrast energy, what visual neurons respond
    # to most; or batch, each channel normalised by its statistics over the batch, time and
    # positions (running ones at evaluation), which keeps every token's amplitude. QK-norm stays
    # per token (RMS) under batch.
    norm: Literal["rms", "layer", "batch"] = "rms"
    parallel: bool = True  # attention and MLP side by side (one pre-norm) or one after the other
    dropout: float = Field(0.0, ge=0, lt=1)
    drop_path: float = Field(0.0, ge=0, lt=1)  # stochastic depth, linearly increasing with depth
    patch_dropout: float = Field(0.0, ge=0, lt=1)  # fraction of spatial tokens dropped in training
    num_registers: int = Field(4, ge=0)
    pos_embed: Literal["rope", "learned", "sinusoidal"] = "rope"
    causal: bool = True  # causal temporal attention
    grad_checkpointing: bool = False
    token_norm: bool = False  # a norm (``norm``) on the tokens right after the tubelet tokenizer
    qk_norm: bool = False  # a norm (``norm``) on each head's q and k before RoPE and attention
    # Causal conv stem at full resolution before the tokenizer, one conv + norm + GELU per entry
    # (its output channels); () for none. The tokenizer then takes stem_channels[-1] channels.
    stem_channels: tuple[int, ...] = ()
    stem_kernel: Triple = (3, 3, 3)  # (T, H, W) kernel of each stem conv
    # The stem's norm: per position over channels ("channel"), or none (the conv gets a bias).
    # A per-position norm divides out each position's contrast energy, what visual neurons
    # respond to most; so does the per-token final norm ("token", ``norm`` on each token).
    # "batch" normalises each channel by its statistics over the batch, time and positions
    # (running statistics at evaluation), which keeps every position's amplitude; "none"
    # (or false) lets the readout read the residual stream itself. true means "token".
    stem_norm: Literal["channel", "none"] = "channel"
    final_norm: Literal["token", "batch", "none"] = "token"
    # Weight of the normalised Laplace (smoothness) penalty on the first layer's spatial filters
    # (the tokenizer's, or the stem's first conv), per frame and channel, as the 2-D CNN
    # yardstick's ``laplace``: large tubelets fit noise without it on small data sets.
    laplace: float = Field(0.0, ge=0)

    @field_validator("final_norm", mode="before")
    @classmethod
    def _final_norm_bool(cls, v: Any) -> Any:
        # Configs written before the norm kinds said true / false.
        return {True: "token", False: "none"}.get(v, v) if isinstance(v, bool) else v

    @model_validator(mode="after")
    def _check(self) -> ViViTConfig:
        if any(c < 1 for c in self.stem_channels) or min(self.stem_kernel) < 1:
            raise ValueError(
                f"stem_channels {self.stem_channels} and stem_kernel {self.stem_kernel} must be "
                ">= 1 everywhere; use stem_channels=[] for no stem"
            )
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"num_heads={self.num_heads} does not divide embed_dim={self.embed_dim}; "
                "pick a divisor"
            )
        head_dim = self.embed_dim // self.num_heads
        if self.pos_embed == "rope" and head_dim % 4:
            raise ValueError(
                f"head dim {head_dim} (embed_dim/num_heads) must be a multiple of 4 for 2D RoPE"
            )
        for k, s in zip(self.kernel_size, self.stride, strict=True):
            if k < 1 or s < 1 or s > k:
                raise ValueError(
                    f"stride {self.stride} must be >= 1 and no larger than kernel_size "
                    f"{self.kernel_size} on every axis"
                )
        return self


class CNNConfig(_Frozen):
    """A ResNet-like 3D-CNN baseline core, the kind of model the ViViT is meant to beat."""

    kind: Literal["cnn"] = "cnn"
    channels: tuple[int, ...] = (32, 64, 128)  # one stage each; stages after the first downsample
    blocks_per_stage: int = Field(1, ge=1)
    stem_kernel: Triple = (5, 7, 7)
    kernel_size: Triple = (3, 3, 3)
    dropout: float = Field(0.0, ge=0, lt=1)


class CNN2DConfig(_Frozen):
    """The field's classic yardstick: a 2-D CNN with the stimulus lags as input channels.

    As in Lurz et al. 2021 and the Sensorium baselines: the first layer sees all ``num_lags``
    frames at once (one ``kernels[0]`` x ``kernels[0]`` filter over lags x channels), the
    others are per-frame 2-D convolutions; each layer is conv, batch norm and ELU. ``laplace``
    weighs a smoothness (normalised Laplace) penalty on the first layer's filters.
    """

    kind: Literal["cnn2d"] = "cnn2d"
    channels: tuple[int, ...] = (32, 32, 32)  # one conv layer each
    kernels: tuple[int, ...] = (9, 7, 7)  # spatial kernel of each layer (the first spans the lags)
    batch_norm: bool = True
    laplace: float = Field(0.1, ge=0)
    # Pad the first layer to keep the frame's size; False: "valid" (H - k + 1 by W - k + 1, as
    # the Sensorium baseline's pad_input=False): every layer then runs on the smaller map.
    pad_input: bool = True

    @model_validator(mode="after")
    def _check(self) -> CNN2DConfig:
        if not self.channels or len(self.kernels) != len(self.channels):
            raise ValueError(
                f"channels {self.channels} and kernels {self.kernels} need one entry per "
                "layer, at least one layer"
            )
        if min(self.channels) < 1 or min(self.kernels) < 1:
            raise ValueError(f"channels {self.channels} and kernels {self.kernels} must be >= 1")
        return self


class LNConfig(_Frozen):
    """A linear-nonlinear (LN) model: ``filters`` linear spatio-temporal filters of
    ``num_lags`` frames and ``kernel`` x ``kernel`` pixels, no nonlinearity; with the Gaussian
    readout each unit's rate is the readout's output nonlinearity of a weighted sum of the
    filters at its own position (a Poisson GLM with a rank-``filters`` filter per unit).
    Ridge is the optimiser's weight decay; ``laplace`` weighs a spatial smoothness penalty."""

    kind: Literal["ln"] = "ln"
    filters: int = Field(4, ge=1)
    kernel: int = Field(15, ge=1)
    laplace: float = Field(0.1, ge=0)


class ReadoutConfig(_Frozen):
    """Per-session Gaussian readout, applied at every time step the core outputs."""

    init_sigma: float = Field(0.2, gt=0)  # initial spread, in normalised [-1, 1] coordinates
    bias_init: Literal["mean_rate", "zero"] = "mean_rate"
    gamma_features: float = Field(0.0, ge=0)  # L1 penalty on readout features
    # The output nonlinearity: softplus, exp (a GLM's canonical link) or ELU + 1 (the
    # Sensorium baselines').
    output: Literal["softplus", "exp", "elu1"] = "softplus"


class ModulatorConfig(_Frozen):
    """ConvGRU behaviour modulator (a multiplicative gain on the core's features)."""

    enabled: bool = True
    hidden_dim: int = Field(16, ge=1)
    kernel_size: int = Field(3, ge=1)
    # g of the gain 1 + g * tanh(W_gain h), which stays in [1 - g, 1 + g]; g <= 1 keeps it
    # non-negative, so behaviour scales a feature but never flips its sign.
    max_gain: float = Field(1.0, gt=0, le=1)


def core_kind(value: Any) -> str:
    # A core without `kind` is a ViViT: the project's model family is the default.
    if isinstance(value, dict):
        return str(value.get("kind", "vivit"))
    return str(getattr(value, "kind", "vivit"))


CoreConfig = Annotated[
    Annotated[ViViTConfig, Tag("vivit")]
    | Annotated[CNNConfig, Tag("cnn")]
    | Annotated[CNN2DConfig, Tag("cnn2d")]
    | Annotated[LNConfig, Tag("ln")],
    Discriminator(
        core_kind,
        custom_error_type="invalidcore_kind",
        custom_error_message="kind must be 'vivit', 'cnn', 'cnn2d' or 'ln'",
    ),
]


class ModelConfig(_Frozen):
    core: CoreConfig = Field(default_factory=ViViTConfig)
    readout: ReadoutConfig = Field(default_factory=ReadoutConfig)
    modulator: ModulatorConfig = Field(default_factory=ModulatorConfig)
    # ViViT only: a per-session MLP of the behaviour (K -> D), pooled per temporal token, added
    # to every spatial token of that step before the spatial blocks (ViV1T).
    behavior_tokens: bool = False
    # A shared MLP maps the pupil position (behaviour channels named like pupil_x/pupil_y, see
    # models.shifter) at each read-out step to a (dx, dy) shift of every unit's readout position.
    shifter: bool = False
    shifter_hidden: int = Field(8, ge=1)  # hidden width of the shifter MLP
    # Each unit's rate times exp(w_n . behaviour + c_n), per session, behaviour pooled per
    # read-out token, the log-gain bounded to +-3 (gain modulation of the firing rate, as
    # running and arousal scale visual responses); starts at gain 1.
    unit_gain: bool = False

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.behavior_tokens and not isinstance(self.core, ViViTConfig):
            raise ValueError(
                f"behavior_tokens needs a ViViT core (core.kind={self.core.kind!r}); "
                "set model.behavior_tokens=false or use the modulator"
            )
        return self


class DataConfig(_Frozen):
    """How sessions become samples (see ``../shared/data-contract.md``)."""

    num_lags: int = Field(24, ge=1)  # frames of history per sample, the target bin included
    # Frames per training and evaluation clip; every temporal token with num_lags frames of
    # history inside the clip predicts the bin it ends on. None: one target per window.
    clip_frames: int | None = Field(None, ge=1)
    val_fraction: float = Field(0.2, gt=0, lt=1)  # used only where a file has no `split`
    test_fraction: float = Field(0.1, ge=0, lt=1)
    split_seed: int = 0
    split_chunk_s: float = Field(30.0, gt=0)  # chunk length of the seeded split of few blocks
    # What a seeded split (a file without `split`) assigns whole: "chunks" the blocks (or chunks
    # of split_chunk_s of few blocks), "repeats" the repeats of a file's `repeat` dataset (a
    # movie shown again: no bin of a held-out repeat is trained on); auto: repeats where the
    # file has at least 3 of them, else chunks.
    split_by: Literal["auto", "chunks", "repeats"] = "auto"
    device_resident: Literal["auto", "on", "off"] = "auto"  # frames and counts on the GPU
    # Frames read from the file batch by batch instead of held in memory; auto: the sessions
    # whose stimuli do not fit in host_memory_gb (None: half the memory available at load).
    stream: Literal["auto", "on", "off"] = "auto"
    host_memory_gb: float | None = Field(None, gt=0)
    # Validation scored on at most this many target bins per session: whole chunks of the
    # validation split drawn with split_seed, the same bins for every trial of a study whatever
    # its clips, batch size or seed. None: the whole validation split.
    max_val_bins: int | None = Field(None, ge=1)
    # Subtract the session's training-split mean from the frames before the scaling by its
    # std. Off by default: the ViViT's per-token norms keep each token's contrast amplitude on
    # the positive offset; the CNN and LN yardsticks, which see the raw sum of a filter, learn
    # faster and steadier centred (benchmarks/NOTES.md).
    center: bool = False

    @field_validator("device_resident", "stream", mode="before")
    @classmethod
    def _yaml_on_off(cls, v: Any) -> Any:
        # YAML reads a bare on/off as a boolean (`--set data.stream=off`).
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.clip_frames is not None and self.clip_frames < self.num_lags:
            raise ValueError(
                f"clip_frames={self.clip_frames} is shorter than num_lags={self.num_lags}; use "
                "at least num_lags frames per clip, or null for one target per window"
            )
        return self


class TrainConfig(_Frozen):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(32, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(3e-4, gt=0)  # core learning rate
    readout_lr_ratio: float = Field(10.0, gt=0)  # readout and modulator lr = lr * ratio
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_epochs: float = Field(1.0, ge=0)
    min_lr_ratio: float = Field(0.01, ge=0, le=1)  # cosine floor as a fraction of the peak
    clip_grad_norm: float | None = Field(1.0, gt=0)
    # Optimiser steps per epoch, so steps_per_epoch * grad_accum batches; None: one pass over
    # the training samples.
    steps_per_epoch: int | None = Field(None, ge=1)
    # Decay of an exponential moving average of the weights (e.g. 0.999), updated after every
    # optimiser step; validation and the best checkpoints use the average. None: off.
    ema_decay: float | None = Field(None, gt=0, lt=1)
    # What picks the best epoch (its checkpoint, early stopping, a study's value): "bps", the
    # mean over sessions of the validation BPS, or "corr", of the mean per-unit correlation
    # (calcium traces). A study spec's `objective` sets it for every trial.
    objective: Literal["bps", "corr"] = "bps"
    early_stopping_patience: int | None = Field(5, ge=1)
    checkpoint_every: int = Field(1, ge=1)
    keep_best: int = Field(3, ge=1)
    seed: int = 0
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto: bf16 autocast on CUDA only
    compile: bool = False


class RunConfig(_Frozen):
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _clips_need_a_causal_core(self) -> RunConfig:
        d, core = self.data, self.model.core
        clips = d.clip_frames is not None and d.clip_frames > d.num_lags
        if clips and isinstance(core, ViViTConfig) and not core.causal:
            raise ValueError(
                "data.clip_frames: clips need model.core.causal=true (a non-causal core would "
                "let a clip's earlier predictions see its later frames); set "
                "data.clip_frames=null (one target per window) to train a non-causal core"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
