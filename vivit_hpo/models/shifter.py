"""Shifter: the pupil position moves every unit's readout position (neuralpredictors, ViV1T).

Free-viewing and head-fixed animals move their eyes, so a unit's receptive field moves on the
screen with the gaze. A small MLP shared by all sessions maps the pupil position of each
read-out step to a shift ``(dx, dy)`` in the readout's normalised [-1, 1] coordinates, added to
the position of every unit of the session (``tanh`` bounds it to a frame's half width)::

    shift_t = tanh(W_2 tanh(W_1 [pupil_x_t, pupil_y_t] + b_1) + b_2)     (B, P, 2)

Which behaviour channels are the pupil position is read from their names
(:func:`pupil_channels`); a session without such a pair gets no shift.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["PUPIL_NAME", "Shifter", "pupil_channels"]

# A channel is a pupil / eye / gaze position coordinate when its lower-cased name is a stem
# naming pupil, eye or gaze, then a separator and an axis: x or y, or 0 or 1 (the columns of a
# two-column position series, as the NWB importer names them: `pupil_position_0`). The
# simulator writes `eye_x`, `eye_y`. Pupil size channels (`pupil`, `pupil_area`) do not match,
# nor do velocities and sizes (`eye_velocity_x`, `pupil_size_x`).
PUPIL_NAME = re.compile(r"^(?P<stem>.*(?:pupil|eye|gaze).*?)[_.\- ](?P<axis>[xy01])$")
_NOT_POSITION = re.compile(r"vel|speed|size|area|diam|radius|width|height|blink")
_AXIS = {"x": 0, "0": 0, "y": 1, "1": 1}


def pupil_channels(names: Sequence[str]) -> tuple[int, int] | None:
    """Indices (x, y) of the pupil position among behaviour channel ``names``, or None.

    The first stem (in channel order) that has both an x and a y channel wins, e.g.
    ``("run_speed", "pupil", "eye_x", "eye_y")`` -> (2, 3).
    """
    found: dict[str, list[int | None]] = {}
    for i, name in enumerate(names):
        m = PUPIL_NAME.match(name.strip().lower())
        if m is None or _NOT_POSITION.search(m["stem"]):
            continue
        axes = found.setdefault(m["stem"], [None, None])
        axis = _AXIS[m["axis"]]
        if axes[axis] is None:
            axes[axis] = i
    for x, y in found.values():
        if x is not None and y is not None:
            return x, y
    return None


class Shifter(nn.Module):
    """MLP ``2 -> hidden -> 2`` with tanh activations (see the module docstring).

    Args:
        hidden: hidden width.
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 2), nn.Tanh())
        # Small last layer: the model starts close to no shift, every weight with a gradient.
        last = self.net[2]
        assert isinstance(last, nn.Linear)
        nn.init.normal_(last.weight, std=0.01)
        nn.init.zeros_(last.bias)

    def forward(self, pupil: Tensor) -> Tensor:
        """(B, P, 2) pupil position (x, y) -> (B, P, 2) float32 shift (dx, dy) in [-1, 1]."""
        out: Tensor = self.net(pupil.float())
        return out.to(torch.float32)
