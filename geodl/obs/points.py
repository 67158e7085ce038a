"""Observations as a gridded field (NaN where unobserved) and the matching point table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geodl.errors import DataError

__all__ = ["Grid", "Observations"]


@dataclass(frozen=True)
class Grid:
    """Coordinates of a ``(time, y, x)`` field: time in days, y and x in km (regular, increasing).

    Examples
    --------
    >>> g = Grid(time=np.arange(3.0), y=np.arange(4) * 10.0, x=np.arange(5) * 10.0)
    >>> g.shape, g.dx
    ((3, 4, 5), 10.0)
    """

    time: np.ndarray
    y: np.ndarray
    x: np.ndarray

    def __post_init__(self) -> None:
        for name in ("time", "y", "x"):
            values = np.asarray(getattr(self, name), dtype=np.float64)
            if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all():
                raise DataError(
                    f"observation grid: {name} must be a non-empty 1-d array of finite numbers, "
                    f"got shape {values.shape}"
                )
            if values.size > 1 and not (np.diff(values) > 0).all():
                raise DataError(f"observation grid: {name} must be strictly increasing")
            object.__setattr__(self, name, values)
        for name in ("y", "x"):
            values = getattr(self, name)
            if values.size < 2:
                raise DataError(f"observation grid: {name} needs at least 2 points")
            step = np.diff(values)
            if not np.allclose(step, step[0], rtol=1e-6):
                raise DataError(
                    f"observation grid: {name} must be regularly spaced (projected km); regrid "
                    "the field first"
                )

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.time.size, self.y.size, self.x.size)

    @property
    def dy(self) -> float:
        return float(self.y[1] - self.y[0])

    @property
    def dx(self) -> float:
        return float(self.x[1] - self.x[0])

    @property
    def time_step(self) -> float:
        """Typical spacing of the time axis (days); 1 for a single time."""
        return float(np.median(np.diff(self.time))) if self.time.size > 1 else 1.0

    def check_field(self, field: np.ndarray, what: str = "field") -> np.ndarray:
        """``field`` as a float array of this grid's shape, or a DataError."""
        field = np.asarray(field)
        if field.shape != self.shape:
            raise DataError(
                f"{what} has shape {field.shape}, expected (time, y, x) = {self.shape} from the "
                "coordinates"
            )
        return field.astype(np.result_type(field.dtype, np.float32), copy=False)


@dataclass(frozen=True)
class Observations:
    """Gridded observations ``grid`` ``(time, y, x)`` (NaN where unobserved) and the point table.

    The table has one row per observed cell: ``time`` (days), ``y``, ``x`` (km, cell centres) and
    ``value``, in C order of the grid; ``table_to_grid`` inverts it.
    """

    grid: np.ndarray
    time: np.ndarray
    y: np.ndarray
    x: np.ndarray
    value: np.ndarray

    @classmethod
    def from_grid(cls, obs: np.ndarray, grid: Grid) -> Observations:
        """Build the point table of ``obs`` (NaN where unobserved) on ``grid``."""
        it, iy, ix = np.nonzero(np.isfinite(obs))
        return cls(obs, grid.time[it], grid.y[iy], grid.x[ix], obs[it, iy, ix])

    @property
    def coverage(self) -> float:
        """Fraction of observed cells over the whole ``(time, y, x)`` grid."""
        return float(np.isfinite(self.grid).mean())

    def table(self) -> dict[str, np.ndarray]:
        """The point table as a dict of equal-length 1-d arrays."""
        return {"time": self.time, "y": self.y, "x": self.x, "value": self.value}
