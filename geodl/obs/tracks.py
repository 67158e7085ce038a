"""Satellite ground tracks over a projected rectangle: pass schedule and cross-track distances.

The domain (a regional box, even if the model behind it is periodic) is crossed by straight
tracks at ``+angle`` (ascending) and ``-angle`` (descending) from the x axis. One satellite's
tracks are ``spacing`` km apart (cross-track); satellites are offset by ``spacing / n``. During a
repeat cycle each satellite flies every one of its tracks once, at evenly spread times, visiting
neighbouring tracks far apart in time (as a sub-cycle does); the schedule repeats every cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from geodl.errors import UserInputError
from geodl.obs.points import Grid

__all__ = ["Pass", "satellite_passes"]


@dataclass(frozen=True)
class Pass:
    """One crossing of the domain: time (days), satellite, unit normal ``(nx, ny)``, offset (km).

    The track is the line ``normal . (x, y) = offset``; ``along`` is its unit direction.
    """

    time: float
    satellite: int
    normal: tuple[float, float]
    along: tuple[float, float]
    offset: float

    def distance(self, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
        """Signed cross-track distance (km) of points ``(xx, yy)``."""
        return self.normal[0] * xx + self.normal[1] * yy - self.offset


def _corners(grid: Grid) -> np.ndarray:
    hy, hx = 0.5 * grid.dy, 0.5 * grid.dx
    ys = (grid.y[0] - hy, grid.y[-1] + hy)
    xs = (grid.x[0] - hx, grid.x[-1] + hx)
    return np.array([(x, y) for x in xs for y in ys])  # (4, 2) as (x, y)


def _stride(n: int) -> int:
    """A step coprime with ``n`` near 0.38 n: successive passes land far apart."""
    for s in range(max(1, round(0.38 * n)), n + 1):
        if math.gcd(s, n) == 1:
            return s
    return 1


def satellite_passes(
    grid: Grid,
    *,
    n_satellites: int,
    repeat_days: float,
    track_spacing_km: float,
    track_angle_deg: float,
    min_separation_km: float,
) -> list[Pass]:
    """Passes over ``grid`` between its first and last time (±half a time step), by time.

    ``min_separation_km`` is the smallest distance between tracks of different satellites that
    keeps them distinct on this grid (a UserInputError otherwise).
    """
    if not (isinstance(n_satellites, int) and n_satellites >= 1):
        raise UserInputError(f"n_satellites must be an integer >= 1, got {n_satellites!r}")
    for name, value in (("repeat_days", repeat_days), ("track_spacing_km", track_spacing_km)):
        if not (math.isfinite(value) and value > 0):
            raise UserInputError(f"{name} must be > 0, got {value!r}")
    if not 0 < track_angle_deg < 90:
        raise UserInputError(
            f"track_angle_deg must be in (0, 90) (angle of ascending tracks from the x axis), got "
            f"{track_angle_deg!r}"
        )
    separation = track_spacing_km / n_satellites
    if separation < min_separation_km:
        most = max(1, int(track_spacing_km // min_separation_km))
        raise UserInputError(
            f"{n_satellites} satellites with tracks {track_spacing_km:g} km apart would be only "
            f"{separation:.3g} km apart, below the {min_separation_km:.3g} km this grid resolves: "
            f"use at most {most} satellites or a larger track_spacing_km"
        )
    corners = _corners(grid)
    half = 0.5 * grid.time_step
    t0, t1 = grid.time[0] - half, grid.time[-1] + half
    passes: list[Pass] = []
    for sat in range(n_satellites):
        tracks = []
        for sign in (1.0, -1.0):  # ascending, descending
            theta = math.radians(sign * track_angle_deg)
            along = (math.cos(theta), math.sin(theta))
            normal = (-math.sin(theta), math.cos(theta))
            proj = corners @ np.array(normal)
            # Descending tracks are shifted by half a spacing so that they cross the ascending ones.
            base = sat * separation + (0.5 * track_spacing_km if sign < 0 else 0.0)
            j0 = math.ceil((proj.min() - base) / track_spacing_km)
            j1 = math.floor((proj.max() - base) / track_spacing_km)
            tracks += [(normal, along, base + j * track_spacing_km) for j in range(j0, j1 + 1)]
        if not tracks:
            continue
        m = len(tracks)
        stride = _stride(m)
        phase = sat * repeat_days / n_satellites / m  # satellites do not pass at the same times
        first_cycle = math.floor((t0 - phase) / repeat_days)
        cycle = first_cycle
        while phase + cycle * repeat_days < t1:
            for k in range(m):
                t = phase + cycle * repeat_days + k * repeat_days / m
                if t0 <= t < t1:
                    normal, along, offset = tracks[(k * stride) % m]
                    passes.append(Pass(t, sat, normal, along, offset))
            cycle += 1
    passes.sort(key=lambda p: (p.time, p.satellite))
    return passes
