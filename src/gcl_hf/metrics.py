"""Stable import path of the shipped metrics (`gcl_hf.metrics.load("recall_at_k")`); they live in
:mod:`gcl_hf.retrieval.metrics`."""

from gcl_hf.retrieval.metrics import METRICS, load, module_path

__all__ = ["METRICS", "load", "module_path"]
