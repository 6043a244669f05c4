"""Stable import path of GCLModel (the spec's module name); the implementation lives in :mod:`gcl_hf.modeling.model`.

It re-exports exactly the documented names, nothing internal."""

from gcl_hf.modeling.model import GCLModel, GCLOutput

__all__ = ["GCLModel", "GCLOutput"]
