"""Opt-in speed layers that are not the model: each changes how the model runs on a device, not what it computes."""

from .cpu import optimize

__all__ = ["optimize"]
