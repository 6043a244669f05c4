"""Streaming top-k over score tiles in the tiles' own precision: float64 on CPU, any dtype on a GPU.

:func:`stream_topk` never builds the ``Q x N`` score matrix: it scores one ``[query block, corpus chunk]``
tile at a time into a reused buffer and keeps a running top-k per query, so memory is bounded by the tile,
not by the pool. On CPU, after each tile's matmul one pass takes the maximum of every 64-column group; the
few groups that beat a row's running k-th score are searched and their entries merged (a top-k selection
only runs while the running scores are cold), and the queries are split across Python threads running
single-threaded torch ops, so no OpenMP barrier is paid per small op.

float32 (and half-precision) queries on CPU go through :mod:`gcl_hf.retrieval.search_shortlist` instead,
which returns the canonical top-k; :func:`plan_search` is the tiling of both.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from gcl_hf.retrieval.search_inputs import (
    Array,
    ChunkSpec,
    load_chunk,
    torch_threads,
)

# Tile sizes (elements of the [query block, chunk] score buffer). On CPU a tile that stays in the
# last-level cache lets the top-k pass read hot data; on a GPU large tiles keep the SMs busy.
_CPU_TILE = 1024 * 2048
_CPU_CHUNK = 2048
_GPU_TILE = 64 * 1024 * 1024
_GPU_CHUNK = 65536
# Below this many queries per thread, splitting the queries across threads does not pay.
MIN_QUERIES_PER_THREAD = 64
_GROUP = 64  # columns per group in the one-pass candidate scan of a tile


@dataclass(frozen=True)
class SearchPlan:
    """How :func:`exact_topk` tiles the work: ``query_block`` queries x ``chunk_size`` corpus rows."""

    chunk_size: int
    query_block: int
    row_filter: bool


def plan_search(
    num_queries: int,
    device: torch.device | str = "cpu",
    chunk_size: int | None = None,
    query_block: int | None = None,
    k: int = 1,
) -> SearchPlan:
    """The tiling :func:`exact_topk` uses (exposed so benchmarks can run the same matmuls bare)."""
    device = torch.device(device)
    on_cpu = device.type == "cpu"
    if chunk_size is None:
        chunk_size = _CPU_CHUNK if on_cpu else _GPU_CHUNK
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    chunk_size = max(int(chunk_size), k + 1)
    if query_block is None:
        tile = _CPU_TILE if on_cpu else _GPU_TILE
        query_block = max(1, tile // chunk_size)
    query_block = max(1, min(int(query_block), max(num_queries, 1)))
    return SearchPlan(chunk_size=chunk_size, query_block=query_block, row_filter=on_cpu)


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


def _merge_candidates(r_c: torch.Tensor, col: torch.Tensor, cand_vals: torch.Tensor, rows_g: torch.Tensor,
                      run_vals: torch.Tensor, run_idx: torch.Tensor, k: int, offset: int) -> None:
    """Merge candidates ``(r_c, col, cand_vals)`` into the running top-k of the rows ``rows_g[r_c]``.

    ``r_c`` indexes ``rows_g``; each row's candidates come in column order."""
    num = rows_g.numel()
    counts = torch.bincount(r_c, minlength=num) + k
    vals = torch.cat([run_vals.index_select(0, rows_g).reshape(-1), cand_vals])
    idx = torch.cat([run_idx.index_select(0, rows_g).reshape(-1), col + offset])
    row = torch.cat([torch.arange(num, device=vals.device).repeat_interleave(k), r_c])
    # (row asc, score desc, index asc): running entries precede candidates and candidates come in
    # column order, so two stable sorts give the lower index first among equal scores.
    order = torch.argsort(vals, descending=True, stable=True)
    order = order[torch.argsort(row[order], stable=True)]
    starts = torch.cumsum(counts, 0) - counts
    take = order[(starts.unsqueeze(1) + torch.arange(k, device=vals.device)).reshape(-1)]
    run_vals[rows_g] = vals[take].view(num, k)
    run_idx[rows_g] = idx[take].view(num, k)


def _threshold_merge(sub: torch.Tensor, thresh: torch.Tensor, rows_g: torch.Tensor, run_vals: torch.Tensor,
                     run_idx: torch.Tensor, k: int, offset: int, max_per_row: int = 4) -> bool:
    """Merge the few tile entries above each row's running k-th score into the running top-k.

    Once the running scores are warm, a tile usually holds one or two entries per row that beat
    them; picking those by comparison is much cheaper than a top-k selection over the row. Gives
    up (returns False) when there are more than ``max_per_row * k`` candidates per row on average.
    """
    num = sub.shape[0]
    if bool(torch.isneginf(thresh).any()):
        return False
    cand = (sub > thresh.unsqueeze(1)).nonzero()
    if cand.shape[0] > max_per_row * k * num:
        return False
    r_c, col = cand[:, 0], cand[:, 1]
    _merge_candidates(r_c, col, sub[r_c, col], rows_g, run_vals, run_idx, k, offset)
    return True


def _grouped_merge(scores: torch.Tensor, thresh: torch.Tensor, qs: int, run_vals: torch.Tensor,
                   run_idx: torch.Tensor, k: int, offset: int) -> bool:
    """:func:`_threshold_merge` for a whole warm tile in one pass over it: the maximum of each group of
    64 columns says which groups hold an entry above the row's running k-th score; only those groups are
    searched. Returns False (nothing done) when it does not apply: a row without k scores yet, a width
    not a multiple of 64, or too many groups to look into."""
    rows, width = scores.shape
    if width % _GROUP or bool(torch.isneginf(thresh).any()):
        return False
    grouped = scores.view(rows, width // _GROUP, _GROUP)
    hit_r, hit_g = (grouped.amax(dim=2) > thresh.unsqueeze(1)).nonzero(as_tuple=True)
    if hit_r.numel() == 0:
        return True
    if hit_r.numel() > 2 * k * rows:
        return False
    block = grouped[hit_r, hit_g]
    inner, c_in = (block > thresh[hit_r].unsqueeze(1)).nonzero(as_tuple=True)
    r_tile = hit_r[inner]
    uniq, counts = torch.unique_consecutive(r_tile, return_counts=True)
    r_c = torch.repeat_interleave(torch.arange(uniq.numel(), device=scores.device), counts)
    _merge_candidates(r_c, hit_g[inner] * _GROUP + c_in, block[inner, c_in], uniq + qs, run_vals, run_idx, k,
                      offset)
    return True


@torch.inference_mode()
def stream_topk(queries: torch.Tensor, shards: list[Array], specs: list[ChunkSpec], k: int, plan: SearchPlan,
                exclude: torch.Tensor | None, bar: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Running top-k (scores, indices) of ``queries`` over the chunks ``specs``, in the tiles' precision."""
    device = queries.device
    num_q = queries.shape[0]
    run_vals = torch.full((num_q, k), -math.inf, dtype=queries.dtype, device=device)
    run_idx = torch.full((num_q, k), -1, dtype=torch.int64, device=device)
    if num_q == 0 or k == 0:
        return run_vals, run_idx
    buffer = torch.empty(plan.query_block * plan.chunk_size, dtype=queries.dtype, device=device)
    q_blocks = [(s, min(s + plan.query_block, num_q)) for s in range(0, num_q, plan.query_block)]
    ex_cols = exclude[:, 1].contiguous() if exclude is not None else None
    for spec in specs:
        chunk = load_chunk(shards, spec, device, queries.dtype)
        offset, width = spec.offset, chunk.shape[0]
        chunk_t = chunk.T
        ex = None
        if exclude is not None and exclude.numel():
            lo = torch.searchsorted(ex_cols, offset)
            hi = torch.searchsorted(ex_cols, offset + width)
            if int(hi) > int(lo):
                ex = exclude[int(lo):int(hi)]
        if bar is not None:
            bar.update(width)
        for qs, qe in q_blocks:
            scores = buffer[: (qe - qs) * width].view(qe - qs, width)
            torch.mm(queries[qs:qe], chunk_t, out=scores)
            if ex is not None:
                sel = ex[(ex[:, 0] >= qs) & (ex[:, 0] < qe)]
                if sel.numel():
                    scores[sel[:, 0] - qs, sel[:, 1] - offset] = -math.inf
            thresh = run_vals[qs:qe, k - 1]
            if plan.row_filter and _grouped_merge(scores, thresh, qs, run_vals, run_idx, k, offset):
                continue
            if plan.row_filter:
                # Only rows whose best tile score beats their running k-th score can change
                # (strictly: a tie loses to the lower index already kept).
                rows = (torch.amax(scores, dim=1) > thresh).nonzero().squeeze(1)
                if rows.numel() == 0:
                    continue
                sub = scores if rows.numel() == scores.shape[0] else scores.index_select(0, rows)
                rows_g = rows + qs
                if _threshold_merge(sub, thresh.index_select(0, rows), rows_g, run_vals, run_idx, k, offset):
                    continue
                new_v, new_i = _select_chunk_topk(sub, k, offset)
                run_vals[rows_g], run_idx[rows_g] = _merge(run_vals[rows_g], run_idx[rows_g], new_v, new_i, k)
                continue
            new_v, new_i = _select_chunk_topk(scores, k, offset)
            run_vals[qs:qe], run_idx[qs:qe] = _merge(run_vals[qs:qe], run_idx[qs:qe], new_v, new_i, k)
    run_idx[torch.isneginf(run_vals)] = -1  # excluded everywhere / fewer than k candidates
    return run_vals, run_idx


def threaded_stream_topk(queries: torch.Tensor, shards: list[Array], specs: list[ChunkSpec], k: int,
                         chunk_size: int | None, query_block: int | None, pairs: torch.Tensor | None,
                         threads: int, bar: Any = None,
                         blas_threads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`stream_topk` over ``threads`` contiguous query groups in parallel Python threads, each with
    single-threaded torch ops; one group runs in this thread with ``blas_threads`` torch threads (default:
    the current count)."""
    num_q = queries.shape[0]
    threads = max(1, min(threads, num_q))
    bounds = [(num_q * t // threads, num_q * (t + 1) // threads) for t in range(threads)]

    def run(t: int) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = bounds[t]
        part = None
        if pairs is not None:
            part = pairs[(pairs[:, 0] >= lo) & (pairs[:, 0] < hi)].clone()
            part[:, 0] -= lo
        plan = plan_search(hi - lo, "cpu", chunk_size, query_block, k)
        with torch_threads(1 if threads > 1 else (blas_threads or torch.get_num_threads())):
            return stream_topk(queries[lo:hi], shards, specs, k, plan, part, bar)

    if threads == 1:
        return run(0)
    with torch_threads(1), ThreadPoolExecutor(max_workers=threads, thread_name_prefix="exact_topk") as pool:
        parts = list(pool.map(run, range(threads)))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
