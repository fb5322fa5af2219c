"""Run configuration: one frozen, validated model per component, parsed once at the edge.

A run config is a YAML file with three sections, ``model``, ``data`` and ``train``; every key
has a default, so ``{}`` is a valid (small) config. ``--set section.key=value`` overrides any
key (:func:`set_key`: values are YAML, so ``--set model.core.kernel_size=[2,4,4]`` works;
``model.core.kernel_size=4`` fills every axis, ``model.core.kernel_size[0]=2`` sets one).

    model:
      core: {kind: vivit, embed_dim: 192, num_heads: 4, ...}   # or {kind: cnn, ...}
      readout: {...}
      modulator: {enabled: true, ...}
    data: {num_lags: 24, ...}
    train: {epochs: 20, lr: 3.0e-4, ...}
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from vivit_hpo.errors import ConfigError

__all__ = [
    "CNN2DConfig",
    "CNNConfig",
    "DataConfig",
    "LNConfig",
    "ModelConfig",
    "ModulatorConfig",
    "ReadoutConfig",
    "RunConfig",
    "TrainConfig",
    "ViViTConfig",
    "apply_overrides",
    "format_validation_error",
    "load_run_config",
    "parse_override",
    "parse_value",
    "set_key",
    "split_key",
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


def _core_kind(value: Any) -> str:
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
        _core_kind,
        custom_error_type="invalid_core_kind",
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


_CORE_TAGS = ("vivit", "cnn", "cnn2d", "ln")
# Keys that were removed, and what replaces them.
_REMOVED_KEYS = {
    "train.max_val_batches": (
        "removed; cap validation in bins of the data with data.max_val_bins (null: all of it)"
    ),
}


def format_validation_error(err: ValidationError, where: str) -> str:
    """One line naming the first bad key of a pydantic error, its value and what is wrong."""
    first = err.errors()[0]
    parts = [str(p) for p in first["loc"] if not str(p).startswith("function-after")]
    # Drop the union tag pydantic puts after a discriminated field ("core.vivit.embed_dim").
    loc = ".".join(
        p for i, p in enumerate(parts) if not (i and parts[i - 1] == "core" and p in _CORE_TAGS)
    )
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = _REMOVED_KEYS.get(loc, "unknown key; check its spelling against the documented keys")
    value = first.get("input")
    shown = "" if first["type"] == "extra_forbidden" or isinstance(value, dict) else f" = {value!r}"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{where}: {loc or '<root>'}{shown}: {msg}{more}"


# -- overrides: the one grammar of `train --set`, `base.overrides`, `study enqueue --set` and
# the space's `to:` keys ----------------------------------------------------------------------
#
# A key is dotted (``train.lr``) and may end in ``[i]``, one axis of a tuple-valued key
# (``model.core.kernel_size[0]``). A scalar written to a tuple-valued key fills every axis
# (``model.core.kernel_size=4`` -> ``(4, 4, 4)``); a list or mapping replaces the value. Values
# are YAML, with YAML 1.2's numbers: ``1e-3`` is a float (PyYAML's YAML 1.1 reads it as a string).

_KEY = re.compile(r"([^.\[\]=\s]+(?:\.[^.\[\]=\s]+)*)(?:\[(\d+)\])?")
_FLOAT_12 = re.compile(r"[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.[\d_]+)[eE][-+]?\d+")


class _ValueLoader(yaml.SafeLoader):
    """YAML's safe loader that also reads ``1e-3`` (no dot) as a float, as YAML 1.2 does."""


_ValueLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(f"^{_FLOAT_12.pattern}$"), list("-+0123456789.")
)


def parse_value(raw: str) -> Any:
    """An override's value: YAML (``4``, ``1e-3``, ``[2, 4, 4]``, ``{kind: cnn}``, ``null``).

    Raises:
        yaml.YAMLError: not valid YAML.
    """
    return yaml.load(raw, Loader=_ValueLoader)  # a SafeLoader: no arbitrary objects


def split_key(key: str) -> tuple[list[str], int | None]:
    """``"model.core.kernel_size[0]"`` -> ``(["model", "core", "kernel_size"], 0)``.

    Raises:
        ConfigError: not a dotted key with an optional ``[i]``.
    """
    m = _KEY.fullmatch(key)
    if m is None:
        raise ConfigError(
            f"--set {key!r}: not a key; use a dotted key (train.lr), optionally with one axis "
            "of a tuple (model.core.kernel_size[0])"
        )
    return m.group(1).split("."), None if m.group(2) is None else int(m.group(2))


def parse_override(item: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, value)``, the value parsed by :func:`parse_value`.

    Raises:
        ConfigError: no ``=``, an empty or malformed key, or a value that is not valid YAML.
    """
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set train.lr=1e-3")
    split_key(key)
    try:
        return key, parse_value(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML") from e


def _default_at(tree: Mapping[str, Any], parts: Sequence[str]) -> Any:
    """The default run config's value at ``parts`` for the core kind ``tree`` has (None where
    there is none): what a key that a partial tree leaves out holds once parsed."""
    model = tree.get("model")
    core = model.get("core") if isinstance(model, Mapping) else None
    try:
        node: Any = RunConfig.model_validate({"model": {"core": {"kind": _core_kind(core)}}})
    except ValidationError:
        return None
    node = node.to_dict()
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def set_key(tree: dict[str, Any], key: str, value: Any) -> None:
    """Write ``value`` at ``key`` of the run-config mapping ``tree``, in place (see above).

    A key the tree leaves out holds its default: ``kernel_size[0]=2`` or ``kernel_size=4`` on a
    tree without a kernel size write into the default one.

    Raises:
        ConfigError: a malformed key, a part of it that is not a section, an index into a value
            that is not a tuple or past its end.
    """
    parts, index = split_key(key)
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a section")
        node = child
    leaf = parts[-1]
    scalar = not isinstance(value, list | tuple | dict) and value is not None
    current = node.get(leaf)
    if leaf not in node and (index is not None or scalar):
        current = _default_at(tree, parts)
    if index is not None:
        if not isinstance(current, list | tuple):
            raise ConfigError(f"--set {key}: {'.'.join(parts)} is not a tuple of axes")
        if index >= len(current):
            raise ConfigError(
                f"--set {key}: {'.'.join(parts)} has {len(current)} axes; use an index below "
                f"{len(current)}"
            )
        node[leaf] = [*current[:index], value, *current[index + 1 :]]
    elif scalar and isinstance(current, list | tuple) and current:
        node[leaf] = [value] * len(current)  # patch 4 -> (4, 4, 4)
    else:
        node[leaf] = value


def apply_overrides(tree: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``tree`` with each ``key=value`` applied (:func:`parse_override`,
    :func:`set_key`).

    Raises:
        ConfigError: a malformed override (one line naming it).
    """
    out = copy.deepcopy(dict(tree))
    for item in overrides:
        set_key(out, *parse_override(item))
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file (``{}`` for an empty one).

    Raises:
        ConfigError: no such file, a folder, a file that cannot be read or is not UTF-8 text,
            invalid YAML, or YAML whose top level is not a mapping (one line naming the file).
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a file; pass the path of a YAML config")
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; pass the path of a YAML config")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path}: not a text file (byte {e.start} is not UTF-8); pass a YAML config"
        ) from e
    except OSError as e:
        raise ConfigError(
            f"{path}: cannot be read ({e.strerror or e.__class__.__name__}); check its "
            "permissions or pass another file"
        ) from e
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}; fix the syntax") from e
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return tree


def parse_run_config(tree: Mapping[str, Any], where: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, where)) from e


def load_run_config(path: str | Path | None, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a run config from YAML (or the defaults when ``path`` is None) and apply ``--set``."""
    tree = read_yaml(path) if path is not None else {}
    return parse_run_config(apply_overrides(tree, overrides), str(path or "config"))
