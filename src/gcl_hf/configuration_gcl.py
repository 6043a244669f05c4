"""Stable import path of GCLConfig (the spec's module name); the implementation lives in :mod:`gcl_hf.modeling.configuration`.

It re-exports exactly the documented names, nothing internal."""

from gcl_hf.modeling.configuration import GCLConfig

__all__ = ["GCLConfig"]
