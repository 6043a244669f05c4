"""Retrieval with a trained model: batched encoding, the embedding cache, exact top-k search, evaluation
against a `RetrievalTask`, the metrics (`evaluate` modules) and modality-gap analysis.

Names load on first use, so `gcl_hf.retrieval.search` stays importable without datasets or evaluate.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "encode_dataset": "encoding",
    "encode_corpus": "embedding_cache",
    "load_cached": "embedding_cache",
    "encode_corpus_distributed": "distributed_encoding",
    "encode_dataset_sharded": "distributed_encoding",
    "EncodeOptions": "options",
    "parse_ks": "options",
    "exact_topk": "search",
    "evaluate_retrieval": "evaluation",
    "rank_corpus": "evaluation",
    "modality_gap": "analysis",
    "GCLIndex": "index",
    "retrieve": "evaluation",
    "TaskRankings": "evaluation",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"gcl_hf.retrieval.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gcl_hf.retrieval' has no attribute {name!r}")


__all__ = list(_LAZY)
