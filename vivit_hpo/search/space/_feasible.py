"""Feasibility: whether a trial's configuration may train on the study's data and device."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vivit_hpo.errors import ConfigError, DataError, SpecError
from vivit_hpo.search.schema import StudySpec
from vivit_hpo.search.space._config import to_overrides, trial_config

Shape = tuple[int, int, int]  # (C, H, W) of a session's frames


def input_shapes(spec: StudySpec) -> list[Shape]:
    """The distinct (C, H, W) frame shapes of the study's sessions, read from the file headers.

    Raises:
        SpecError: a session path is missing or unreadable.
    """
    if spec.data.synth is not None:
        size = spec.data.synth.size
        return sorted({(1, h, w) for h, w in (size if isinstance(size, list) else [size])})
    import h5py

    from vivit_hpo.data import expand_paths

    try:
        files = expand_paths(spec.data.paths or [])
    except DataError as e:
        raise SpecError(f"data.paths: {e}") from e
    shapes: set[Shape] = set()
    for path in files:
        try:
            with h5py.File(path, "r") as f:
                shape = f["stim"].shape
        except (OSError, KeyError) as e:
            raise SpecError(
                f"data.paths: {path}: not a readable session file with a `stim` dataset; "
                "check it with `vivit-hpo data inspect`"
            ) from e
        c = 1 if len(shape) == 3 else int(shape[1])
        shapes.add((c, int(shape[-2]), int(shape[-1])))
    return sorted(shapes)


def infeasible_reason(
    spec: StudySpec,
    base: Mapping[str, Any],
    values: Mapping[str, Any],
    shapes: Sequence[Shape],
    *,
    memory_cap_bytes: int | None,
    device_type: str = "cuda",
    extra: Mapping[str, Any] | None = None,
) -> str | None:
    """Why a configuration must not train, or None when it may.

    Checks, cheapest first: the run config's own validation (heads dividing the width, RoPE
    head dims, stride <= kernel), the model's feasibility on every session's frame shape
    (tubelet larger than the frames, fewer than 2 temporal tokens, ...), and the estimated
    training memory of one batch of clips against ``memory_cap_bytes`` (None: not checked),
    with bf16 activations
    where the run would use autocast on ``device_type`` and fp32 ones otherwise.
    """
    from vivit_hpo.models import check_feasible, estimate_memory_bytes
    from vivit_hpo.models.encoder import clip_geometry

    try:
        cfg = trial_config(base, to_overrides(spec.space, values), extra)
    except ConfigError as e:
        return str(e).removeprefix("trial config: ")
    frames = clip_geometry(cfg).frames  # a clip's frames, num_lags for windows
    for c, h, w in shapes:
        reason = check_feasible(cfg.model, (c, frames, h, w), num_lags=cfg.data.num_lags)
        if reason is not None:
            return reason
        if memory_cap_bytes is not None:
            amp = cfg.train.amp == "bf16" or (cfg.train.amp == "auto" and device_type == "cuda")
            need = estimate_memory_bytes(
                cfg.model,
                (c, frames, h, w),
                cfg.train.batch_size,
                activation_bytes=2 if amp else 4,
                num_lags=cfg.data.num_lags,
            )
            if need > memory_cap_bytes:
                return (
                    f"estimated training memory {need / 2**30:.2f} GiB exceeds the "
                    f"{memory_cap_bytes / 2**30:.2f} GiB allowed on this device"
                )
    return None
