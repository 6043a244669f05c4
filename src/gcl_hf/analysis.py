"""Stable import path of the modality-gap analysis (the spec's module name); the implementation lives in :mod:`gcl_hf.retrieval.analysis`.

It re-exports exactly the documented names, nothing internal."""

from gcl_hf.retrieval.analysis import modality_gap, plot_modality_embeddings

__all__ = ["modality_gap", "plot_modality_embeddings"]
