"""Exact inner-product top-k search that streams the corpus in chunks (SPEC §5, §8).

:func:`exact_topk` never builds the ``Q x N`` score matrix: it scores one ``[query block, corpus
chunk]`` tile at a time into a reused buffer and keeps a running top-k per query, so memory is
bounded by the tile, not by the pool (the corpus may be a list of memory-mapped shards). Results
equal faiss ``IndexFlatIP`` (same scores; ties broken deterministically towards the lower corpus
index). On CPU, after each tile's matmul a per-row maximum (one cheap pass) finds the queries
whose running k-th score some tile entry beats; for those, the few entries above it are picked
by comparison and merged (a top-k selection only runs while the running scores are cold), and
the queries are split across Python threads running single-threaded torch ops, so no OpenMP
barrier is paid per small op. This keeps the search within a few percent of the bare matmuls.

:func:`build_faiss_index` / :func:`faiss_topk` are the optional faiss backend
(``pip install gcl-hf[faiss]``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = ["SearchPlan", "build_faiss_index", "exact_topk", "faiss_topk", "plan_search"]

Array = Union[torch.Tensor, np.ndarray]
#: Per-query corpus indices to drop from the ranking: a sequence (one iterable per query), a
#: mapping query index -> iterable, or an int tensor/array of ``(query, corpus)`` pairs ``[P, 2]``.
Exclude = Union[Sequence[Iterable[int]], Mapping[int, Iterable[int]], torch.Tensor, np.ndarray, None]

# Tile sizes (elements of the [query block, chunk] score buffer). On CPU a tile that stays in the
# last-level cache lets the top-k pass read hot data; on a GPU large tiles keep the SMs busy.
_CPU_TILE = 1024 * 2048
_CPU_CHUNK = 2048
_GPU_TILE = 64 * 1024 * 1024
_GPU_CHUNK = 65536
# Below this many queries per thread, splitting the queries across threads does not pay.
_MIN_QUERIES_PER_THREAD = 64


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


def _as_tensor(x: Array, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if not x.flags.writeable:  # read-only memmaps: torch warns but never writes to them here
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                return torch.from_numpy(x)
        return torch.from_numpy(x)
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _shards(corpus: Array | Sequence[Array]) -> list[Array]:
    if isinstance(corpus, (torch.Tensor, np.ndarray)):
        return [corpus]
    if isinstance(corpus, (list, tuple)):
        return list(corpus)
    raise TypeError(f"corpus_embeds must be a tensor, an array or a list of them, got {type(corpus).__name__}")


def _compute_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    if dtype == torch.float64:
        return torch.float64
    if device.type == "cpu" or dtype not in (torch.float16, torch.bfloat16):
        return torch.float32  # CPU half-precision matmuls are slow and faiss is float32 anyway
    return dtype


def _exclude_pairs(exclude: Exclude, num_queries: int, device: torch.device) -> torch.Tensor | None:
    """``[P, 2]`` int64 (query, corpus) pairs, sorted by corpus index."""
    if exclude is None:
        return None
    if isinstance(exclude, (torch.Tensor, np.ndarray)):
        pairs = torch.as_tensor(exclude, dtype=torch.int64).reshape(-1, 2)
    else:
        items = exclude.items() if isinstance(exclude, Mapping) else enumerate(exclude)
        rows: list[int] = []
        cols: list[int] = []
        for q, ids in items:
            if ids is None:
                continue
            ids = list(ids)
            rows.extend([int(q)] * len(ids))
            cols.extend(int(i) for i in ids)
        pairs = torch.tensor([rows, cols], dtype=torch.int64).T.reshape(-1, 2)
    if pairs.numel() and (pairs[:, 0].min() < 0 or pairs[:, 0].max() >= num_queries):
        raise ValueError(f"exclude names a query index outside [0, {num_queries})")
    order = torch.argsort(pairs[:, 1], stable=True)
    return pairs[order].to(device)


def _chunks(shards: list[Array], chunk_size: int, device: torch.device, dtype: torch.dtype,
            dim: int) -> Iterator[tuple[int, torch.Tensor]]:
    """``(global offset, [c, D] tensor on device)`` for every chunk of every shard."""
    offset = 0
    for n, shard in enumerate(shards):
        if shard.ndim != 2 or shard.shape[1] != dim:
            raise ValueError(f"corpus shard {n} has shape {tuple(shard.shape)}; expected [*, {dim}]")
        for start in range(0, shard.shape[0], chunk_size):
            block = _as_tensor(shard[start:start + chunk_size], f"corpus shard {n}")
            yield offset + start, block.to(device=device, dtype=dtype, non_blocking=True)
        offset += shard.shape[0]


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
    mask = sub > thresh.unsqueeze(1)
    cand = mask.nonzero()
    if cand.shape[0] > max_per_row * k * num:
        return False
    r_c, col = cand[:, 0], cand[:, 1]
    counts = torch.bincount(r_c, minlength=num) + k
    vals = torch.cat([run_vals.index_select(0, rows_g).reshape(-1), sub[r_c, col]])
    idx = torch.cat([run_idx.index_select(0, rows_g).reshape(-1), col + offset])
    row = torch.cat([torch.arange(num, device=sub.device).repeat_interleave(k), r_c])
    # (row asc, score desc, index asc): running entries precede candidates and candidates come in
    # column order, so two stable sorts give the lower index first among equal scores.
    order = torch.argsort(vals, descending=True, stable=True)
    order = order[torch.argsort(row[order], stable=True)]
    starts = torch.cumsum(counts, 0) - counts
    take = order[(starts.unsqueeze(1) + torch.arange(k, device=sub.device)).reshape(-1)]
    run_vals[rows_g] = vals[take].view(num, k)
    run_idx[rows_g] = idx[take].view(num, k)
    return True


@torch.inference_mode()
def _search(queries: torch.Tensor, shards: list[Array], k: int, plan: SearchPlan,
            exclude: torch.Tensor | None, bar: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    device = queries.device
    num_q, dim = queries.shape
    run_vals = torch.full((num_q, k), -math.inf, dtype=queries.dtype, device=device)
    run_idx = torch.full((num_q, k), -1, dtype=torch.int64, device=device)
    if num_q == 0 or k == 0:
        return run_vals, run_idx
    buffer = torch.empty(plan.query_block * plan.chunk_size, dtype=queries.dtype, device=device)
    q_blocks = [(s, min(s + plan.query_block, num_q)) for s in range(0, num_q, plan.query_block)]
    ex_cols = exclude[:, 1].contiguous() if exclude is not None else None
    for offset, chunk in _chunks(shards, plan.chunk_size, device, queries.dtype, dim):
        width = chunk.shape[0]
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


def _threaded_search(queries: torch.Tensor, shards: list[Array], k: int, chunk_size: int | None,
                     query_block: int | None, pairs: torch.Tensor | None, threads: int,
                     bar: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_search` over ``threads`` contiguous query groups in parallel Python threads."""
    from concurrent.futures import ThreadPoolExecutor

    num_q = queries.shape[0]
    bounds = [(num_q * t // threads, num_q * (t + 1) // threads) for t in range(threads)]

    def run(bound: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = bound
        part = None
        if pairs is not None:
            part = pairs[(pairs[:, 0] >= lo) & (pairs[:, 0] < hi)].clone()
            part[:, 0] -= lo
        plan = plan_search(hi - lo, "cpu", chunk_size, query_block, k)
        return _search(queries[lo:hi], shards, k, plan, part, bar)

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="exact_topk") as pool:
            parts = list(pool.map(run, bounds))
    finally:
        torch.set_num_threads(previous)
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def exact_topk(
    query_embeds: Array,
    corpus_embeds: Array | Sequence[Array],
    k: int,
    *,
    chunk_size: int | None = None,
    query_block: int | None = None,
    exclude: Exclude = None,
    num_threads: int | None = None,
    show_progress: bool = False,
) -> tuple[Array, Array]:
    """Exact top-``k`` corpus rows by inner product for every query, streaming the corpus.

    ``query_embeds`` is ``[Q, D]``; ``corpus_embeds`` is ``[N, D]`` or a list of ``[N_i, D]`` shards
    (tensors or numpy arrays, e.g. memory maps), scored in chunks of ``chunk_size`` rows on the
    queries' device. Returns ``(scores [Q, k'], indices [Q, k'])`` with ``k' = min(k, N)``, sorted by
    score descending and, for equal scores, by corpus index ascending; the same kind (tensor or
    array) as ``query_embeds``. ``exclude`` removes given corpus indices from given queries' rankings
    (see :data:`Exclude`); slots left without a candidate get score ``-inf`` and index ``-1``.
    Peak extra memory is one ``query_block x chunk_size`` score tile plus one corpus chunk per thread.

    On CPU the queries are split into ``num_threads`` groups (default: ``torch.get_num_threads()``,
    fewer for small query sets) searched by Python threads with single-threaded torch ops: no
    OpenMP barrier per small op, so the search stays close to the bare matmul time even on a busy
    machine. ``torch.set_num_threads`` is set to 1 for the duration of the call and restored.
    Inputs must be finite (NaN scores would sort first, as in ``torch.topk``). ``show_progress``
    shows a tqdm bar over the corpus rows scanned (summed over query groups).
    """
    as_numpy = isinstance(query_embeds, np.ndarray)
    queries = _as_tensor(query_embeds, "query_embeds")
    if queries.ndim != 2:
        raise ValueError(f"query_embeds must be [Q, D], got shape {tuple(queries.shape)}")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    shards = _shards(corpus_embeds)
    total = sum(int(s.shape[0]) for s in shards)
    k = min(int(k), total)
    device = queries.device
    dtype = _compute_dtype(queries.dtype, device)
    queries = queries.to(dtype)
    pairs = _exclude_pairs(exclude, queries.shape[0], device)
    if device.type != "cpu":
        threads = 1
    elif num_threads is not None:
        threads = max(1, min(int(num_threads), queries.shape[0]))
    else:
        threads = max(1, min(torch.get_num_threads(), queries.shape[0] // _MIN_QUERIES_PER_THREAD))
    with tqdm(total=total * threads, desc="exact top-k", unit="row", unit_scale=True,
              disable=not show_progress) as bar:
        if threads > 1:
            vals, idx = _threaded_search(queries, shards, k, chunk_size, query_block, pairs, threads, bar)
        else:
            plan = plan_search(queries.shape[0], device, chunk_size, query_block, k)
            vals, idx = _search(queries, shards, k, plan, pairs, bar)
    if as_numpy:
        return vals.cpu().numpy(), idx.cpu().numpy()
    return vals, idx


# ---------------------------------------------------------------------- faiss backend
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
    shards = _shards(corpus_embeds)
    dim = int(shards[0].shape[1])
    index = faiss.IndexFlatIP(dim)
    for shard in shards:
        for start in range(0, shard.shape[0], batch_size):
            index.add(_float32_numpy(shard[start:start + batch_size]))
    return index


def faiss_topk(index: Any, query_embeds: Array, k: int, *, exclude: Exclude = None) -> tuple[Array, Array]:
    """Top-``k`` from a faiss index (``build_faiss_index``), same conventions as :func:`exact_topk`.

    With ``exclude`` the index is asked for ``k`` plus the most ids excluded from any query, and the
    excluded ids are dropped before truncating to ``k``.
    """
    as_numpy = isinstance(query_embeds, np.ndarray)
    device = query_embeds.device if isinstance(query_embeds, torch.Tensor) else None
    queries = _float32_numpy(query_embeds)
    k = min(int(k), int(index.ntotal))
    drop: dict[int, set[int]] = {}
    if exclude is not None:
        pairs = _exclude_pairs(exclude, queries.shape[0], torch.device("cpu"))
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
