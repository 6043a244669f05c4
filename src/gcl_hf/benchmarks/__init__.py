"""Benchmark loaders (M-BEIR, MMEB, CoVR) returning :class:`RetrievalTask` lists."""

from .task import MODALITIES, RetrievalTask

__all__ = ["MODALITIES", "RetrievalTask"]
