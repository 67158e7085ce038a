"""Observation operators: how satellites (and twin experiments) observe a true state."""

from geodl.obs.state import observe_state

__all__ = ["observe_state"]
