"""The optional faiss backend of the exact search (``pip install gcl-hf[faiss]``): an ``IndexFlatIP``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from gcl_hf.retrieval.search.inputs import Array, Exclude, exclude_pairs, shards_of


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("the faiss backend needs faiss: pip install 'gcl-hf[faiss]'") from exc
    return faiss


def _float32_numpy(x: Array | Sequence[Array]) -> np.ndarray:
    if isinstance(x, (list, tuple)):
        x = np.concatenate([_float32_numpy(s) for s in x], axis=0)
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def build_faiss_index(corpus_embeds: Array | Sequence[Array], *, batch_size: int = 65536) -> Any:
    """A faiss ``IndexFlatIP`` holding ``corpus_embeds`` (added in batches of ``batch_size`` rows)."""
    faiss = _faiss()
    shards = shards_of(corpus_embeds)
    dim = int(shards[0].shape[1])
    index = faiss.IndexFlatIP(dim)
    for shard in shards:
        for start in range(0, shard.shape[0], batch_size):
            index.add(_float32_numpy(shard[start:start + batch_size]))
    return index


def faiss_topk(index: Any, query_embeds: Array, k: int, *, exclude: Exclude = None) -> tuple[Array, Array]:
    """Top-``k`` from a faiss index (``build_faiss_index``), same conventions as ``exact_topk``.

    With ``exclude`` the index is asked for ``k`` plus the most ids excluded from any query, and the
    excluded ids are dropped before truncating to ``k``.
    """
    as_numpy = isinstance(query_embeds, np.ndarray)
    device = query_embeds.device if isinstance(query_embeds, torch.Tensor) else None
    queries = _float32_numpy(query_embeds)
    k = min(int(k), int(index.ntotal))
    drop: dict[int, set[int]] = {}
    if exclude is not None:
        pairs = exclude_pairs(exclude, queries.shape[0], torch.device("cpu"))
        for q, c in pairs.tolist():
            drop.setdefault(q, set()).add(c)
    extra = max((len(v) for v in drop.values()), default=0)
    fetch = min(k + extra, int(index.ntotal))
    scores, ids = index.search(queries, fetch)
    if drop:
        out_s = np.full((queries.shape[0], k), -np.inf, dtype=np.float32)
        out_i = np.full((queries.shape[0], k), -1, dtype=np.int64)
        for q in range(queries.shape[0]):
            bad = drop.get(q)
            keep = [j for j in range(fetch) if ids[q, j] >= 0 and (not bad or int(ids[q, j]) not in bad)][:k]
            out_s[q, : len(keep)] = scores[q, keep]
            out_i[q, : len(keep)] = ids[q, keep]
        scores, ids = out_s, out_i
    else:
        scores, ids = scores[:, :k], ids[:, :k].astype(np.int64)
    if as_numpy:
        return scores, ids
    return torch.from_numpy(scores).to(device), torch.from_numpy(ids).to(device)
