"""Stable import path of the GCL loss (the spec's module name); the implementation lives in :mod:`gcl_hf.losses.gcl`.

It re-exports exactly the documented names, nothing internal."""

from gcl_hf.losses.gcl import ALL_PAIRS, CLIP_PAIRS, gcl_loss

__all__ = ["ALL_PAIRS", "CLIP_PAIRS", "gcl_loss"]
