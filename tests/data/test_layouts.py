"""benchmarks/layouts.py's writers and the importers (issue 19): one tiny simulated population in
the project's format, the Allen NWB layout and the Sensorium layout holds the same stimulus,
counts, behaviour, blocks and split bin for bin once imported (no training here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import h5py
import numpy as np
import pytest

pytest.importorskip("pynwb")

ROOT = Path(__file__).resolve().parents[2]


def _layouts() -> ModuleType:
    name = "bench_layouts"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "layouts.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("frames", [600, 1500])  # few blocks (split drawn per block), many
def test_three_layouts_hold_the_same_bins(tmp_path: Path, frames: int) -> None:
    lay = _layouts()
    pop = lay.simulate(neurons=5, frames=frames, size=(8, 8), seed=3)
    blocks = np.unique(pop.blocks)
    assert all(np.unique(pop.split[pop.blocks == b]).size == 1 for b in blocks)
    assert set(pop.split.tolist()) == {0, 1, 2}
    files = lay.import_all(pop, tmp_path, gap_s=0.5)
    for layout in ("allen", "sensorium"):
        assert lay.same_bins(files["native"], files[layout]) == [], layout
    with (
        h5py.File(files["native"]) as n,
        h5py.File(files["allen"]) as a,
        h5py.File(files["sensorium"]) as s,
    ):
        assert n["stim"].shape == (frames, 8, 8)
        for f in (n, a, s):
            np.testing.assert_array_equal(f["stim"][()], pop.stim)
            np.testing.assert_array_equal(f["robs"][()], pop.robs)
            np.testing.assert_array_equal(f["split"][()], pop.split)
            np.testing.assert_array_equal(f["behavior"][()], pop.behavior)
            assert list(f.attrs["behavior_names"]) == list(lay.CHANNELS)
            assert float(f.attrs["frame_rate"]) == pytest.approx(30.0)
        assert s.attrs["response_kind"] == "calcium"
        # Blocks: the Allen importer numbers its blocks 0, 1, ... (at each stimulus_block and
        # grey gap); Sensorium keeps the trial ids, which are the simulated block ids.
        np.testing.assert_array_equal(a["blocks"][()], pop.blocks)
        np.testing.assert_array_equal(s["blocks"][()], pop.blocks)
    assert "native split copied on" in files["notes"]["allen"]
