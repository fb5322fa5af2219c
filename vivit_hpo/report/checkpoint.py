"""Getting the arrays of a trained run's figures out of its checkpoint (the I/O side of analysis).

:func:`analyze_run` loads a run directory, reads the readouts' positions, runs the ViViT core on
validation samples for its attention maps, and hands the arrays to the pure functions of
:mod:`vivit_hpo.report.analysis`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from vivit_hpo.errors import DataError
from vivit_hpo.report.analysis import (
    AttentionInfo,
    PixelTransform,
    ReceptiveFieldInfo,
    attention_info,
    frame_transform,
    receptive_field_info,
    tubelet_transform,
)

__all__ = ["RunAnalysis", "analyze_run", "read_truth"]

_LN2 = math.log(2.0)


@dataclass(frozen=True)
class RunAnalysis:
    """The figure data of one trained run, and notes on what could not be computed."""

    run_dir: Path
    core_kind: str
    rf: ReceptiveFieldInfo | None
    attention: AttentionInfo | None
    attention_session: str | None
    attention_samples: int
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figure data."""
        return {
            "run_dir": str(self.run_dir),
            "core_kind": self.core_kind,
            "receptive_fields": None if self.rf is None else self.rf.to_dict(),
            "attention": None if self.attention is None else self.attention.to_dict(),
            "attention_session": self.attention_session,
            "attention_samples": self.attention_samples,
            "notes": list(self.notes),
        }


def read_truth(data_file: Path) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The simulator's true RF centres (N, 2) in [-1, 1] and spreads (N,) in pixels, or None.

    Simulated sessions keep them in ``truth/<file name>`` beside the session file.
    """
    truth = data_file.parent / "truth" / data_file.name
    if not truth.is_file():
        return None
    with h5py.File(truth, "r") as f:
        if "units/rf_center" not in f:
            return None
        centres = np.asarray(f["units/rf_center"][()], dtype=float)
        spreads = np.asarray(f["units/sigma"][()], dtype=float) if "units/sigma" in f else None
    return centres, spreads


def analyze_run(
    run_dir: str | Path,
    data_paths: Sequence[str | Path] | None = None,
    *,
    device: str = "cpu",
    num_samples: int = 64,
    session: str | None = None,
) -> RunAnalysis:
    """Receptive fields and attention statistics of a trained run.

    Args:
        run_dir: a run directory (``config.yaml``, ``sessions.json``, ``checkpoints/``).
        data_paths: session files or folders; needed for the attention maps (the core is run on
            validation samples) and for true receptive fields of simulated sessions.
        device: where to run the model.
        num_samples: validation clips (evenly spaced over the split) the maps average over.
        session: the session whose samples are used; default the first of the run's sessions
            found in the data.

    Returns:
        A :class:`RunAnalysis`; without data the attention part is None and a note says why.

    Raises:
        ConfigError: the run directory has no usable checkpoint.
        DataError: a data file breaks the contract, or ``session`` is not in the data.
    """
    # Imported here: the report's study sections must not pay for torch models on import.
    from vivit_hpo.data import expand_paths, load_sessions
    from vivit_hpo.models import ViViTCore, collect_attention
    from vivit_hpo.training import load_run

    run_dir = Path(run_dir)
    cfg, model, metas = load_run(run_dir, device)
    core = cfg.model.core
    notes: list[str] = []
    files = expand_paths(data_paths) if data_paths else []

    mu, sigma, sizes, transforms = {}, {}, {}, {}
    for m in metas:
        readout = model.readout(m.name)
        mu[m.name] = readout.mu.detach().float().cpu().numpy()  # (N, 2)
        sigma[m.name] = readout.sigma.detach().float().cpu().numpy()  # (N, 2)
        sizes[m.name] = (m.height, m.width)
        tf: PixelTransform
        if core.kind == "vivit":
            tf = tubelet_transform(m.height, m.width, core.kernel_size[1:], core.stride[1:])
        else:
            tf = frame_transform(m.height, m.width)
        transforms[m.name] = tf
    if core.kind != "vivit":
        notes.append(
            "CNN core: readout positions are drawn as if its feature map covered the frame."
        )
    truth = {}
    for f in files:
        t = read_truth(f)
        name = _session_name(f)
        if t is not None and name in mu and t[0].shape == mu[name].shape:
            truth[name] = t
    rf = receptive_field_info(mu, sigma, sizes, transforms, truth or None)

    att: AttentionInfo | None = None
    att_session: str | None = None
    n_used = 0
    if not isinstance(model.core, ViViTCore):
        notes.append("Attention maps need a ViViT core; this run's core is a CNN.")
    elif not files:
        notes.append("Attention maps need samples to run the model on: pass --data.")
    else:
        # Frames scaled as the run was trained (its sessions' statistics), whatever the files.
        data = load_sessions(files, cfg.data).standardised_as(metas)
        known = [n for n in (m.name for m in metas) if n in data.names]
        if session is not None and session not in known:
            raise DataError(
                f"session {session!r} is not both in the run and in the data "
                f"(shared: {', '.join(known) or 'none'}); pick one of those"
            )
        if not known:
            notes.append(
                f"None of the run's sessions ({', '.join(m.name for m in metas)}) is in the "
                f"data ({', '.join(data.names)}); attention maps skipped."
            )
        else:
            att_session = session or known[0]
            # The clips the model trained and is scored on, evenly spaced over the split.
            clips = data.to(device).with_clips(model.clips)
            starts, ends = clips.eval_clips(att_session, "val")
            pick = np.unique(
                np.linspace(0, starts.size - 1, min(num_samples, starts.size)).astype(int)
            )
            batch = clips.batch(att_session, starts[pick], ends[pick])
            with torch.no_grad():
                maps = collect_attention(model, batch.stim)
            n_used = len(pick)
            _, hp, wp = maps.grid
            att = attention_info(
                [a.float().cpu().numpy() for a in maps.spatial],
                [a.float().cpu().numpy() for a in maps.temporal],
                (hp, wp),
                maps.num_registers,
                registers_first=True,
                causal=bool(getattr(core, "causal", True)),
                spatial_entropy=maps.spatial_entropy.float().cpu().numpy() / _LN2,
                temporal_entropy=maps.temporal_entropy.float().cpu().numpy() / _LN2,
            )
    return RunAnalysis(
        run_dir=run_dir,
        core_kind=core.kind,
        rf=rf,
        attention=att,
        attention_session=att_session,
        attention_samples=n_used,
        notes=tuple(notes),
    )


def _session_name(path: Path) -> str:
    """A session file's name as the loader gives it (its ``name`` attribute, else the stem)."""
    with h5py.File(path, "r") as f:
        name = f.attrs.get("name")
    if isinstance(name, bytes):
        name = name.decode()
    return str(name) if name else path.stem
