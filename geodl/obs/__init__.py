"""Observation operators: how satellites (and twin experiments) observe a true state."""

from geodl.obs.altimetry import observe_nadir, observe_swath
from geodl.obs.clouds import cloud_masks, observe_clouds, transplant_clouds
from geodl.obs.points import Grid, Observations
from geodl.obs.state import observe_state
from geodl.obs.tracks import Pass, satellite_passes

__all__ = [
    "Grid",
    "Observations",
    "Pass",
    "cloud_masks",
    "observe_clouds",
    "observe_nadir",
    "observe_state",
    "observe_swath",
    "satellite_passes",
    "transplant_clouds",
]
