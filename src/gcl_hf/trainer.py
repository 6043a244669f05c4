"""Stable import path of GCLTrainer (the spec's module name); the implementation lives in :mod:`gcl_hf.training.trainer`.

It re-exports exactly the documented names, nothing internal."""

from gcl_hf.training.trainer import GCLTrainer, NonFiniteGradientError, NonFiniteLossError

__all__ = ["GCLTrainer", "NonFiniteGradientError", "NonFiniteLossError"]
