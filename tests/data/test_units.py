"""Unit selection: the safe filter expression, AllenSDK's QC preset, regions, invalid times."""

from __future__ import annotations

import numpy as np
import pytest

from vivit_hpo.data.units import UnitFilter, allen_qc, invalid_scope, region_mask
from vivit_hpo.errors import DataError

COLUMNS = {
    "quality": np.array(["good", "noise", "good", "good"], dtype=object),
    "presence_ratio": np.array([0.99, 0.99, 0.92, np.nan]),
    "amplitude_cutoff": np.array([0.05, 0.05, 0.05, 0.05]),
    "isi_violations": np.array([0.1, 0.1, 0.1, 0.1]),
    "valid": np.array([True, True, False, True]),
}


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("quality == 'good' and presence_ratio > 0.9", [0, 2]),
        ("quality != 'good' or presence_ratio < 0.95", [1, 2]),
        ("not (quality == 'noise')", [0, 2, 3]),
        ("0.9 < presence_ratio <= 0.95", [2]),
        ("quality in ('good', 'mua') and valid", [0, 3]),
        ("quality not in ['good']", [1]),
        ("presence_ratio != 0.99", [2, 3]),  # NaN fails every comparison but !=
        ("amplitude_cutoff > -1", [0, 1, 2, 3]),
        ("True", [0, 1, 2, 3]),
    ],
)
def test_filter_keeps(text: str, kept: list[int]) -> None:
    assert np.flatnonzero(UnitFilter.parse(text).evaluate(COLUMNS, 4)).tolist() == kept


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("presence_ratio + 1 > 2", r"`\+` is not allowed; use comparisons of columns"),
        ("__import__('os').system('true')", r"`a call` is not allowed"),
        ("quality.upper() == 'GOOD'", r"`a call` is not allowed"),
        ("COLUMNS['x'] > 1", r"`\[\]` is not allowed"),
        ("quality == None", r"`None` is not allowed"),
        ("-presence_ratio < 0", r"`-` is not allowed"),
        ("(lambda: 1)() == 1", r"`a call` is not allowed"),
        ("quality ==", r"not an expression \(invalid syntax\)"),
        ("presence_ratio", r"'presence_ratio' is not a yes/no value; compare it"),
        (
            "qualty == 'good'",
            r"no column 'qualty' in the Units table with one value per unit "
            r"\(it has: amplitude_cutoff, isi_violations, presence_ratio, quality, valid\)",
        ),
        ("quality > 0.5", r"column 'quality' holds text but is compared with 0.5"),
        ("presence_ratio == 'high'", r"column 'presence_ratio' holds numbers but is compared"),
        ("quality in 'good'", r"`in` needs a list of constants"),
    ],
)
def test_filter_refuses(text: str, message: str) -> None:
    with pytest.raises(DataError, match=message) as err:
        UnitFilter.parse(text).evaluate(COLUMNS, 4)
    assert str(err.value).startswith(f"--unit-filter {text!r}: ")


def test_allen_qc_is_allensdks_default() -> None:
    # allensdk/brain_observatory/ecephys/__init__.py: UNIT_FILTER_DEFAULTS (0.1, 0.95, 0.5),
    # and quality == 'good' when the table has the column.
    qc = allen_qc(sorted(COLUMNS))
    assert qc.text == (
        "amplitude_cutoff <= 0.1 and presence_ratio >= 0.95 and isi_violations <= 0.5 and "
        "quality == 'good'"
    )
    assert qc.evaluate(COLUMNS, 4).tolist() == [True, False, False, False]
    no_quality = {k: v for k, v in COLUMNS.items() if k != "quality"}
    assert allen_qc(sorted(no_quality)).evaluate(no_quality, 4).tolist() == [1, 1, 0, 0]
    with pytest.raises(
        DataError,
        match=r"--allen-qc: the Units table has no column "
        r"isi_violations \(AllenSDK's quality metrics are",
    ):
        allen_qc(["amplitude_cutoff", "presence_ratio", "quality"])


def test_region_mask() -> None:
    loc = np.array(["VISp", "LGd", "VISp", ""], dtype=object)
    assert region_mask(loc, ["VISp"], "x").tolist() == [True, False, True, False]
    assert region_mask(loc, ["LGd", "VISp"], "x").tolist() == [True, True, True, False]
    with pytest.raises(
        DataError,
        match=r"--region VISl: no unit is there \(locations from x\); "
        r"the units' regions: VISp \(2\), \(none\) \(1\), LGd \(1\)",
    ):
        region_mask(loc, ["VISl"], "x")


def test_invalid_scope_follows_allensdks_tags() -> None:
    probes = [frozenset({"probeA", "760"}), frozenset({"probeB", "761"}), frozenset()]
    assert invalid_scope(["EcephysProbe", "760", "probeA"], probes).tolist() == [1, 0, 1]
    assert invalid_scope(["EcephysProbe", "761"], probes).tolist() == [0, 1, 1]
    assert invalid_scope(["EcephysSession", "1", "all_probes"], probes).all()
    assert invalid_scope(["EcephysSession", "1", "stimulus"], probes).all()
    assert invalid_scope([], probes).all()
    assert not invalid_scope(["EcephysSession", "1", "optotagging"], probes).any()
