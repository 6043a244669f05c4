"""Stable import path of GCLTrainingArguments (the spec's module name); the implementation lives in :mod:`gcl_hf.training.arguments`.

It re-exports exactly the documented names, nothing internal."""

from gcl_hf.training.arguments import GCLTrainingArguments

__all__ = ["GCLTrainingArguments"]
