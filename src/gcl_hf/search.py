"""Stable import path of exact top-k search (the spec's ``gcl_hf.search.exact_topk``); the implementation
lives in the package :mod:`gcl_hf.retrieval.search`."""

from gcl_hf.retrieval.search import exact_topk

__all__ = ["exact_topk"]
