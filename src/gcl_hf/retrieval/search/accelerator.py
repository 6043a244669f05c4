"""The search on an accelerator: a running top-k over score tiles in the tiles' own precision.

:func:`stream_topk` never builds the ``Q x N`` score matrix: it scores one ``[query block, corpus chunk]``
tile at a time into a reused buffer (a CPU corpus is streamed to the device chunk by chunk) and merges each
tile's top-k into a running top-k per query, ranked by (score desc, index asc). A GPU keeps large tiles
busy and its top-k selection is cheap, so no candidate scan or shortlist (the CPU engine,
:mod:`~gcl_hf.retrieval.search.engine`) is needed; the scores are the tiles' own (half precision stays half).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from gcl_hf.retrieval.search.engine import SearchPlan
from gcl_hf.retrieval.search.inputs import Array, ChunkSpec, load_chunk, pairs_in


def _select_chunk_topk(scores: torch.Tensor, k: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of each row of ``scores`` by (score desc, index asc), as ``(values, global indices)``,
    returned in ascending index order (what the stable merge needs)."""
    rows, width = scores.shape
    if width <= k:
        idx = torch.arange(offset, offset + width, device=scores.device).expand(rows, width)
        return scores, idx
    vals, idx = torch.topk(scores, k + 1, dim=1, largest=True, sorted=True)
    # The k+1-th value equal to the k-th means a tie straddles the cut, and topk may have kept a
    # higher index than a tied one it dropped: redo those rows with a stable sort (lower index first).
    tied = vals[:, k - 1] == vals[:, k]
    vals, idx = vals[:, :k], idx[:, :k]
    if bool(tied.any()):
        rows_t = tied.nonzero().squeeze(1)
        v, i = torch.sort(scores.index_select(0, rows_t), dim=1, descending=True, stable=True)
        vals = vals.clone()
        idx = idx.clone()
        vals[rows_t] = v[:, :k]
        idx[rows_t] = i[:, :k]
    idx, order = torch.sort(idx, dim=1)
    return vals.gather(1, order), idx + offset


def _merge(run_vals: torch.Tensor, run_idx: torch.Tensor, new_vals: torch.Tensor, new_idx: torch.Tensor,
           k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Running top-k (sorted by score desc, index asc) merged with candidates of higher indices."""
    vals = torch.cat([run_vals, new_vals.to(run_vals.dtype)], dim=1)
    idx = torch.cat([run_idx, new_idx], dim=1)
    vals, order = torch.sort(vals, dim=1, descending=True, stable=True)
    return vals[:, :k], idx.gather(1, order[:, :k])


@torch.inference_mode()
def stream_topk(queries: torch.Tensor, shards: list[Array], specs: list[ChunkSpec], k: int, plan: SearchPlan,
                exclude: torch.Tensor | None, bar: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Running top-k (scores, indices) of ``queries`` over the chunks ``specs``, on the queries' device."""
    device = queries.device
    num_q = queries.shape[0]
    run_vals = torch.full((num_q, k), -math.inf, dtype=queries.dtype, device=device)
    run_idx = torch.full((num_q, k), -1, dtype=torch.int64, device=device)
    if num_q == 0 or k == 0:
        return run_vals, run_idx
    buffer = torch.empty(plan.query_block * plan.chunk_size, dtype=queries.dtype, device=device)
    for spec in specs:
        chunk = load_chunk(shards, spec, device, queries.dtype)
        offset, width = spec.offset, chunk.shape[0]
        ex = pairs_in(exclude, offset, offset + width, column=1)
        if bar is not None:
            bar.update(width)
        for qs in range(0, num_q, plan.query_block):
            qe = min(qs + plan.query_block, num_q)
            scores = buffer[: (qe - qs) * width].view(qe - qs, width)
            torch.mm(queries[qs:qe], chunk.T, out=scores)
            if ex is not None and (sel := pairs_in(ex, qs, qe)) is not None:
                scores[sel[:, 0], sel[:, 1]] = -math.inf
            new_v, new_i = _select_chunk_topk(scores, k, offset)
            run_vals[qs:qe], run_idx[qs:qe] = _merge(run_vals[qs:qe], run_idx[qs:qe], new_v, new_i, k)
    run_idx[torch.isneginf(run_vals)] = -1  # excluded everywhere / fewer than k candidates
    return run_vals, run_idx
