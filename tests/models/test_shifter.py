from __future__ import annotations

import pytest
import torch
from model_helpers import assert_all_grads

from vivit_hpo.data.simulate import BEHAVIOR_NAMES
from vivit_hpo.models.shifter import Shifter, pupil_channels


@pytest.mark.parametrize(
    ("names", "want"),
    [
        (BEHAVIOR_NAMES, (2, 3)),  # what the simulator writes
        (("run_speed", "pupil_x", "pupil_y"), (1, 2)),
        (("Pupil_Y", "Pupil_X"), (1, 0)),
        (("running_speed", "pupil_position_0", "pupil_position_1"), (1, 2)),  # NWB 2-column
        (("eye_tracking_0", "eye_tracking_1", "pupil_area"), (0, 1)),
        (("gaze.x", "gaze.y"), (0, 1)),
        (("eye_velocity_x", "eye_velocity_y", "eye_x", "eye_y"), (2, 3)),  # not velocities
        (("run_speed", "pupil", "pupil_area"), None),  # pupil size is no position
        (("eye_x",), None),  # x without y
        (("pupil_x", "eye_y"), None),  # two different signals
        ((), None),
    ],
)
def test_pupil_channels(names: tuple[str, ...], want: tuple[int, int] | None) -> None:
    assert pupil_channels(names) == want


def test_shifter_shapes_bounds_and_grads() -> None:
    shifter = Shifter(5)
    pupil = torch.randn(3, 4, 2) * 3
    shift = shifter(pupil)
    assert shift.shape == (3, 4, 2) and shift.dtype == torch.float32
    assert torch.isfinite(shift).all() and (shift.abs() <= 1).all()
    assert shift.abs().max() < 0.1  # starts close to no shift
    shift.sum().backward()
    assert_all_grads(shifter)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert shifter(pupil).dtype == torch.float32
