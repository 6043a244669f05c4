"""A bf16 first pass that shortlists candidates with a proven error margin, then exact canonical rescoring.

On CPUs with bf16 units (AVX512-BF16, AMX) a bf16 matmul runs several times faster than a float32 one.
Its scores are approximate, so every tile entry ``a`` gets a proven interval ``[a - E, a + E]`` around the
canonical score (:mod:`gcl_hf.retrieval.search_rescore`); a query's k-th largest lower end ``Lambda``
is a lower bound of its canonical k-th score, so only entries whose upper end reaches ``Lambda`` can be
in the top-k. Those are kept and rescored canonically: the result is the canonical float32 top-k, the
same indices and scores as ``precision="float32"``.

The bound. torch's CPU bf16 matmul (oneDNN, or its own kernels elsewhere) multiplies bf16 inputs
exactly into float32, accumulates in float32 and rounds the result once to bf16. With
``q = q_h + q_l`` (``q_h = bf16(q)``, ``|c_l| <= u |c|``, ``u = 2^-8``) and likewise for ``c``:

* inputs: ``|q.c - q_h.c_h| = |q_h.c_l + q_l.c| <= (u |q_h| + |q_l|) |c|``;
* accumulation: ``|acc - q_h.c_h| <= gamma_D(2^-24) |q_h| |c_h|``, ``|c_h| <= (1 + u) |c|``;
* output rounding: ``|a - acc| <= u / (1 - u) |a|``;
* canonical score vs exact, and flushed subnormals: see :mod:`~gcl_hf.retrieval.search_rescore`.

So ``E = u/(1-u) |a| + alpha_q |c| + slack`` with ``alpha_q = (u + gamma_D (1 + u)) |q_h| + |q_l| +
canonical_error |q|`` computed per query (``|q_l|`` is the query's actual residual, about ``0.35 u |q|``)
and ``|c|`` bounded per corpus chunk. For unit vectors ``E`` is about 0.005 plus 0.4 % of the score.

Work: the corpus chunks are shared round-robin between Python threads (each converts its chunks to bf16
once); every thread scores all queries against its chunks and keeps, per query, the entries whose upper
end reaches the running ``Lambda`` (shared by the threads: any thread's value is a valid lower bound).
Candidates are found per tile by a max over groups of 64 columns on the bf16 bits read as int16 (valid
for positive thresholds), then a comparison inside the groups that reach the threshold.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from gcl_hf.retrieval.search_float32 import float32_topk, plan_search
from gcl_hf.retrieval.search_inputs import Array, ChunkSpec, chunk_specs, load_chunk, pairs_in
from gcl_hf.retrieval.search_rescore import (
    SAFETY,
    U_BF16,
    canonical_error,
    canonical_scores,
    float32_matmul_error,
    float64_norms,
    flush_slack,
    max_row_norm,
    topk_of_pairs,
)

#: Candidates kept per query at most; a query whose shortlist grows past it is searched in float32.
DEFAULT_SHORTLIST_CAP = 4096
_GROUP = 64  # columns per group in the candidate scan
SUPER_BLOCK = 8192  # queries per pass over the corpus (bounds the shortlist memory)
_BF16_MAX = (2 - 2.0**-7) * 2.0**127
_U_OUT = U_BF16 / (1 - U_BF16)


def bf16_supported() -> bool:
    """Whether this CPU has bf16 dot-product units (AVX512-BF16 or AMX) that make bf16 matmuls fast."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name)()) for name in checks if hasattr(cpu, name))


def query_terms(queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(bf16 queries, alpha_q, |q|)``: the rounded queries and the per-query factors of the bound."""
    dim = queries.shape[1]
    q_h = queries.to(torch.bfloat16)
    q_l = queries - q_h.float()  # exact: the rounding residual of a float32 value fits in float32
    norm_h, norm_l, norm = float64_norms(q_h.float()), float64_norms(q_l), float64_norms(queries)
    acc = float32_matmul_error(dim)
    alpha = ((U_BF16 + acc * (1 + U_BF16)) * norm_h + norm_l + canonical_error(dim) * norm) * SAFETY
    return q_h, alpha, norm


def score_error_bound(approx: torch.Tensor, alpha: torch.Tensor, query_norm: torch.Tensor,
                      corpus_norm: float, dim: int) -> torch.Tensor:
    """``E`` (float64) with ``|approx - canonical| <= E`` for bf16 tile scores ``approx`` of queries with
    factors ``alpha`` / ``query_norm`` against corpus rows of norm at most ``corpus_norm``."""
    a = approx.double()
    fixed = alpha * corpus_norm + 3 * flush_slack(dim, query_norm, corpus_norm)
    return (_U_OUT * a.abs() + fixed) * SAFETY


def _collect_threshold(lam: torch.Tensor, alpha: torch.Tensor, query_norm: torch.Tensor, corpus_norm: float,
                       dim: int) -> torch.Tensor:
    """The largest bf16 ``T`` per row such that every ``a`` with ``a + E(a) >= lam`` has ``a >= T``."""
    rest = lam - (alpha * corpus_norm + 3 * flush_slack(dim, query_norm, corpus_norm)) * SAFETY
    slope = _U_OUT * SAFETY
    t = torch.where(rest >= 0, rest / (1 + slope), rest / (1 - slope))
    t = t - t.abs() * 2.0**-40 - 2.0**-140  # the divisions' own rounding
    return bf16_floor(t)


def bf16_floor(x: torch.Tensor) -> torch.Tensor:
    """The largest bfloat16 ``<= x`` (float64 in; below ``-max`` clamps to ``-max``, ``+inf`` stays)."""
    x = x.clamp(min=-_BF16_MAX)
    f = x.float()
    f = torch.where(f.double() > x, torch.nextafter(f, torch.tensor(-math.inf)), f)
    h = f.to(torch.bfloat16)
    bits = h.view(torch.int16)
    down = torch.where(bits > 0, bits - 1, torch.where(bits == 0, torch.full_like(bits, -32767), bits + 1))
    return torch.where(h.float() > f, down, bits).view(torch.bfloat16)


class _Shortlist:
    """One thread's candidates for a block of queries.

    ``low`` holds, per query, the ``k`` largest lower ends among the candidates seen (its last column is
    the thread's ``Lambda``); ``lam`` is shared by the threads and holds the largest ``Lambda`` any of
    them has reached. The candidates (row, upper end, index) are appended flat and filtered against
    ``lam`` whenever they have grown enough since the last filtering (no sort: ``Lambda`` is kept
    up to date tile by tile in ``low``). A query with more than ``cap`` candidates gets ``lam = +inf``
    (nothing more is collected for it) and goes to the float32 search.
    """

    def __init__(self, lam: torch.Tensor, k: int, cap: int) -> None:
        self.lam, self.k, self.cap = lam, k, cap
        self.low = torch.full((lam.numel(), k), -math.inf, dtype=torch.float64)
        self.parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.pending = 0
        self.budget = max(1 << 16, 4 * lam.numel() * k)

    def add(self, rows: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, index: torch.Tensor) -> None:
        """Append candidates (``rows`` in non-decreasing order) and raise ``low`` / ``lam`` with them."""
        uniq, counts = torch.unique_consecutive(rows, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        group = torch.repeat_interleave(torch.arange(uniq.numel()), counts)
        slot = torch.arange(rows.numel()) - starts[group]
        merged = torch.full((uniq.numel(), self.k + int(counts.max())), -math.inf, dtype=torch.float64)
        merged[:, : self.k] = self.low[uniq]
        merged[group, self.k + slot] = lower
        top = torch.topk(merged, self.k, dim=1).values
        self.low[uniq] = top
        self.lam[uniq] = torch.maximum(self.lam[uniq], top[:, -1])
        self.parts.append((rows, upper, index))
        self.pending += rows.numel()
        if self.pending > self.budget:
            self.prune()

    def prune(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.parts:
            return torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.float64), torch.empty(0, dtype=torch.int64)
        rows, upper, index = (torch.cat(p) for p in zip(*self.parts))
        keep = upper >= self.lam[rows]
        over = torch.bincount(rows[keep], minlength=self.lam.numel()) > self.cap
        if bool(over.any()):
            self.lam[over] = math.inf  # stop collecting for these queries: they go to float32
            keep &= ~over[rows]
        kept = (rows[keep], upper[keep], index[keep])
        self.parts, self.pending = [kept], 0
        self.budget = max(self.budget, 2 * kept[0].numel())
        return kept


def _candidates(scores: torch.Tensor, thresh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(row, column)`` of the tile entries ``>= thresh`` (per row), in row-major order."""
    rows, width = scores.shape
    bits = thresh.view(torch.int16)
    if width % _GROUP or not bool((bits > 0).all()):
        return (scores >= thresh.unsqueeze(1)).nonzero(as_tuple=True)
    # For a threshold > +0, bf16 order agrees with int16 order of the bits (negative numbers, -0 and
    # -inf have negative bits): an integer max over 64-column groups finds the groups to look into.
    grouped = scores.view(torch.int16).view(rows, width // _GROUP, _GROUP)
    hit_r, hit_g = (grouped.amax(dim=2) >= bits.unsqueeze(1)).nonzero(as_tuple=True)
    if hit_r.numel() == 0:
        return hit_r, hit_g
    inner_h, inner_c = (grouped[hit_r, hit_g] >= bits[hit_r].unsqueeze(1)).nonzero(as_tuple=True)
    return hit_r[inner_h], hit_g[inner_h] * _GROUP + inner_c


@torch.inference_mode()
def _scan(t: int, threads: int, q_h: torch.Tensor, alpha: torch.Tensor, q_norm: torch.Tensor,
          shards: list[Array], specs: list[ChunkSpec], k: int, query_block: int, pairs: torch.Tensor | None,
          shortlist: _Shortlist, bar: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thread ``t``: score all queries of the block against chunks ``t, t + threads, ...``."""
    num_q, dim = q_h.shape
    lam = shortlist.lam
    mine = specs[t::threads]
    width_max = max((s.stop - s.start for s in mine), default=0)
    chunk_h = torch.empty((width_max, dim), dtype=torch.bfloat16)
    buffer = torch.empty(min(query_block, num_q) * width_max, dtype=torch.bfloat16)
    ex_cols = pairs[:, 1].contiguous() if pairs is not None else None
    for spec in mine:
        chunk = load_chunk(shards, spec, torch.device("cpu"), torch.float32)
        width, offset = chunk.shape[0], spec.offset
        norm_c = max_row_norm(chunk)
        chunk_h[:width].copy_(chunk)
        ex = None
        if ex_cols is not None:
            lo, hi = int(torch.searchsorted(ex_cols, offset)), int(torch.searchsorted(ex_cols, offset + width))
            ex = pairs[lo:hi] if hi > lo else None
        for qs in range(0, num_q, query_block):
            qe = min(qs + query_block, num_q)
            scores = buffer[: (qe - qs) * width].view(qe - qs, width)
            torch.mm(q_h[qs:qe], chunk_h[:width].T, out=scores)
            if ex is not None:
                sel = pairs_in(ex, qs, qe)
                if sel is not None:
                    scores[sel[:, 0], sel[:, 1] - offset] = -math.inf
            a_rows, q_rows = alpha[qs:qe], q_norm[qs:qe]
            lam_b = lam[qs:qe].clone()
            cold = torch.isneginf(lam_b).nonzero().squeeze(1)
            if cold.numel() and width >= k:  # no bound yet: the k-th lower end within this tile is one
                a_k = torch.topk(scores.index_select(0, cold).float(), k, dim=1).values[:, k - 1]
                lam_b[cold] = a_k.double() - score_error_bound(a_k, a_rows[cold], q_rows[cold], norm_c, dim)
            r, col = _candidates(scores, _collect_threshold(lam_b, a_rows, q_rows, norm_c, dim))
            if r.numel():
                approx = scores[r, col].double()
                err = score_error_bound(approx, a_rows[r], q_rows[r], norm_c, dim)
                upper = approx + err
                keep = upper >= lam_b[r]
                shortlist.add(r[keep] + qs, (approx - err)[keep], upper[keep], col[keep] + offset)
        if bar is not None:
            bar.update(width)
    return shortlist.prune()


@torch.inference_mode()
def bf16_topk(queries: torch.Tensor, shards: list[Array], k: int, *, chunk_size: int | None,
              query_block: int | None, pairs: torch.Tensor | None, threads: int, cap: int | None = None,
              bar: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical top-``k`` of float32 CPU ``queries`` through a bf16 first pass (see the module doc)."""
    num_q, dim = queries.shape
    cap = DEFAULT_SHORTLIST_CAP if cap is None else int(cap)
    if cap < k:
        raise ValueError(f"shortlist_cap must be >= k ({k}), got {cap}")
    plan = plan_search(min(num_q, SUPER_BLOCK), "cpu", chunk_size, query_block, k)
    specs = chunk_specs(shards, plan.chunk_size, dim)
    threads = max(1, min(threads, len(specs)))
    q_h, alpha, q_norm = query_terms(queries)
    band_rows, band_cols, fallback = [], [], []
    previous = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        for s0 in range(0, num_q, SUPER_BLOCK):
            s1 = min(s0 + SUPER_BLOCK, num_q)
            lam = torch.full((s1 - s0,), -math.inf, dtype=torch.float64)
            lists = [_Shortlist(lam, k, cap) for _ in range(threads)]
            block_pairs = pairs_in(pairs, s0, s1)
            args = (q_h[s0:s1], alpha[s0:s1], q_norm[s0:s1], shards, specs, k, plan.query_block, block_pairs)
            if threads == 1:
                parts = [_scan(0, 1, *args, lists[0], bar)]
            else:
                with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="exact_topk_bf16") as pool:
                    parts = list(pool.map(lambda t: _scan(t, threads, *args, lists[t], bar), range(threads)))
            rows, upper, index = (torch.cat(p) for p in zip(*parts))
            # Lambda*: the k-th largest lower end over all candidates (each thread's k largest are kept).
            final = torch.topk(torch.cat([sl.low for sl in lists], dim=1), k, dim=1).values[:, k - 1]
            overflow = torch.isposinf(lam)
            band = upper >= final[rows]
            overflow |= torch.bincount(rows[band], minlength=s1 - s0) > cap
            band &= ~overflow[rows]
            band_rows.append(rows[band] + s0)
            band_cols.append(index[band])
            fallback.append(overflow.nonzero().squeeze(1) + s0)
    finally:
        torch.set_num_threads(previous)
    rows, cols = torch.cat(band_rows), torch.cat(band_cols)
    vals, idx = topk_of_pairs(rows, cols, canonical_scores(queries, shards, rows, cols, threads), num_q, k)
    redo = torch.cat(fallback)
    if redo.numel():  # shortlist over the cap: the exact float32 path for those queries
        position = torch.full((num_q,), -1, dtype=torch.int64)
        position[redo] = torch.arange(redo.numel())
        sub = None
        if pairs is not None and pairs.numel():
            mapped = position[pairs[:, 0]]
            sub = torch.stack([mapped[mapped >= 0], pairs[mapped >= 0, 1]], dim=1)
        v, i = float32_topk(queries.index_select(0, redo), shards, k, chunk_size=chunk_size,
                            query_block=query_block, pairs=sub, threads=threads)
        vals[redo], idx[redo] = v, i
    return vals, idx
