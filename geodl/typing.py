"""Dimension names and tensor shape conventions shared by every layer.

Tensors follow a fixed axis order ``(batch, time, channel, y, x)`` (see DESIGN.md). Annotations use
plain strings so that no runtime dependency is needed, e.g. ``x: Tensor  # (B, T, C, H, W)``.
"""

from __future__ import annotations

from typing import Final

BATCH: Final = "batch"
TIME: Final = "time"
CHANNEL: Final = "channel"
Y: Final = "y"
X: Final = "x"
COMPONENT: Final = "component"

#: Axis order of every gridded tensor.
GRID_AXES: Final = (BATCH, TIME, CHANNEL, Y, X)
#: Axis order of every state-vector tensor (Lorenz systems).
STATE_AXES: Final = (BATCH, TIME, COMPONENT)
