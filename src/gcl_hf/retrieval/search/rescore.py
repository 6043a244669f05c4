"""Canonical scores and the rounding-error bounds that let a fast first pass hand over to them.

A matrix product's float32 result for one (query, corpus) pair depends on the BLAS kernel the shapes
select (a 3-query block and a 1000-query block round differently), so "the float32 score" is not one
number. The search therefore ranks by a **canonical score**: the products of the float32 inputs (exact
in float64), summed in float64 by a fixed pairwise tree, rounded to float32. It is a function of the two
vectors alone, within float32 rounding of the true inner product. Every path (float32 tiles, bf16 tiles)
first keeps a shortlist that provably contains the canonical top-k, then rescores the shortlist
canonically, so all paths return the same indices and scores.

Bounds (``S = sum_i |q_i c_i| <= |q| |c|``, ``u`` = unit roundoff, ``gamma_n = n u / (1 - n u)``):

* canonical vs exact: ``|canon - q.c| <= (gamma_L(2^-53) + 2^-24 (1 + gamma_L(2^-53))) S`` with
  ``L = ceil(log2 D)`` tree levels (:func:`canonical_error`).
* a float32 matmul (any summation order, with or without FMA): ``|s - q.c| <= gamma_D(2^-24) S``.
* a bf16 matmul with float32 accumulation and a bf16 output, from ``q = q_h + q_l`` (``q_h = bf16(q)``,
  likewise ``c = c_h + c_l`` with ``|c_l| <= u |c|``, ``u = 2^-8``): ``|q.c - q_h.c_h| <= (u |q_h| + |q_l|) |c|``
  (inputs), ``|acc - q_h.c_h| <= gamma_D(2^-24) |q_h| |c_h|`` with ``|c_h| <= (1 + u) |c|`` (accumulation),
  ``|a - acc| <= u / (1 - u) |a|`` (output rounding); for unit vectors about 0.005 plus 0.4 % of the score.
  This is what torch's CPU bf16 matmul does (oneDNN, or torch's own kernels for small shapes): exact
  products, float32 accumulation, one rounding to bf16.

The float32 bound assumes nothing about the kernel but float32 arithmetic (any order, any blocking of the
sum, FMA or not), so it holds for every BLAS the search may pick (MKL, OpenBLAS:
:mod:`~gcl_hf.retrieval.search.blas`). Both tile bounds take the form ``|a - canon| <= E(a) = relative |a| + alpha_q |c| + slack``
(:class:`TileBound`), with ``alpha_q`` per query and ``|c|`` bounded per corpus chunk.

Each bound also gets an absolute slack ``D 2^-120 (|q| + |c| + 1)`` that covers flushing of subnormal
inputs, products and sums to zero (bf16 units work with DAZ/FTZ): about 1e-33 for unit vectors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from gcl_hf.retrieval.search.inputs import Array, gather_rows, torch_threads

U32 = 2.0**-24  # float32 unit roundoff
U64 = 2.0**-53  # float64 unit roundoff
U_BF16 = 2.0**-8  # bfloat16 unit roundoff (8 significant bits)
# Relative inflation applied to every bound computed in float64 (its own rounding is far below this).
SAFETY = 1.0 + 2.0**-30
_RESCORE_BATCH = 256  # pairs per batch: [256, D] float64 buffers stay in the L2 cache
_QUERIES64_MAX = 1 << 24  # float64 copy of the queries for the rescoring up to 128 MiB, else per batch


def gamma(n: int, u: float) -> float:
    """``n u / (1 - n u)``: the relative error bound of a sum of ``n + 1`` terms (or ``n`` roundings)."""
    if n * u >= 1:
        raise ValueError(f"dimension {n} too large for an error bound at unit roundoff {u}")
    return n * u / (1 - n * u)


def tree_levels(dim: int) -> int:
    """Levels of the pairwise tree over ``dim`` terms (``dim`` padded to a power of two)."""
    return max(0, (max(dim, 1) - 1).bit_length())


def canonical_error(dim: int) -> float:
    """Relative bound (times ``S``) of the canonical float32 score against the exact inner product."""
    g = gamma(tree_levels(dim), U64)
    return g + U32 * (1 + g)


def float32_matmul_error(dim: int) -> float:
    """Relative bound (times ``S``) of any float32 dot product of length ``dim`` with float32 accumulation."""
    return gamma(dim, U32)


def flush_slack(dim: int, query_norm: torch.Tensor, corpus_norm: float | torch.Tensor) -> torch.Tensor:
    """Absolute slack for subnormals flushed to zero (inputs, products, partial sums)."""
    return dim * 2.0**-120 * (query_norm + corpus_norm + 1.0)


def max_row_norm(chunk: torch.Tensor) -> float:
    """An upper bound of the largest row norm of a float32 chunk (its float32 computation inflated by
    the norm's own rounding bound)."""
    if chunk.numel() == 0:
        return 0.0
    norm = float(torch.linalg.vector_norm(chunk, dim=1).max())
    return norm * (1.0 + gamma(chunk.shape[1] + 2, U32)) + 2.0**-120


def float64_norms(x: torch.Tensor) -> torch.Tensor:
    """Row norms in float64, inflated to upper bounds."""
    return torch.linalg.vector_norm(x.double(), dim=1) * SAFETY


def pairwise_sum(x: torch.Tensor) -> torch.Tensor:
    """Row sums of ``x`` by a fixed pairwise tree: each row's result depends only on that row (elementwise
    additions give the same bits whatever the vectorisation, the thread count or the batch)."""
    width = x.shape[1]
    padded = 1 << tree_levels(width)
    if padded != width:
        x = torch.nn.functional.pad(x, (0, padded - width))
    while x.shape[1] > 1:
        half = x.shape[1] // 2
        x = x[:, :half] + x[:, half:]
    return x[:, 0]


@torch.inference_mode()
def _canonical_part(queries: torch.Tensor, queries64: torch.Tensor | None, shards: list[Array], rows: torch.Tensor,
                    cols: torch.Tensor, out: torch.Tensor) -> None:
    """:func:`canonical_scores` of one contiguous part of the pairs, in batches through reused buffers
    (fresh multi-megabyte tensors would cost a page fault per 4 KiB). ``queries64``: the queries in
    float64, zero-padded to the tree's width (None: converted batch by batch)."""
    dim = queries.shape[1]
    width = 1 << tree_levels(dim)
    batch = min(_RESCORE_BATCH, rows.numel())
    x = torch.zeros((batch, width), dtype=torch.float64)  # padding columns stay 0: they are only read
    y = torch.zeros((batch, width), dtype=torch.float64)
    q32 = torch.empty((batch, dim), dtype=torch.float32)
    single = len(shards) == 1 and isinstance(shards[0], torch.Tensor) and shards[0].device.type == "cpu"
    c32 = torch.empty((batch, dim), dtype=shards[0].dtype if single else torch.float32)
    for s in range(0, rows.numel(), batch):
        n = min(batch, rows.numel() - s)
        if queries64 is not None:
            torch.index_select(queries64, 0, rows[s:s + n], out=y[:n])
        else:
            torch.index_select(queries, 0, rows[s:s + n], out=q32[:n])
            y[:n, :dim].copy_(q32[:n])
        if single:
            torch.index_select(shards[0], 0, cols[s:s + n], out=c32[:n])
            x[:n, :dim].copy_(c32[:n])
        else:
            x[:n, :dim].copy_(gather_rows(shards, cols[s:s + n], torch.float32))
        x[:n].mul_(y[:n])  # products of float32 values are exact in float64
        half = width
        while half > 1:
            half //= 2
            x[:n, :half].add_(x[:n, half:2 * half])
        out[s:s + n] = x[:n, 0].float()


@torch.inference_mode()
def canonical_scores(queries: torch.Tensor, shards: list[Array], rows: torch.Tensor, cols: torch.Tensor,
                     threads: int = 1) -> torch.Tensor:
    """Canonical float32 scores of the pairs ``(queries[rows[i]], corpus[cols[i]])``, computed in
    ``threads`` Python threads (single-threaded torch ops) in corpus order (sequential reads)."""
    out = torch.empty(rows.numel(), dtype=torch.float32)
    if rows.numel() == 0:
        return out
    order = torch.argsort(cols)
    rows_s, cols_s, out_s = rows[order], cols[order], torch.empty_like(out)
    threads = max(1, min(threads, rows.numel() // _RESCORE_BATCH))
    bounds = [(rows.numel() * t // threads, rows.numel() * (t + 1) // threads) for t in range(threads)]

    width = 1 << tree_levels(queries.shape[1])
    queries64 = None
    if queries.shape[0] * width <= _QUERIES64_MAX:
        queries64 = torch.zeros((queries.shape[0], width), dtype=torch.float64)
        queries64[:, : queries.shape[1]] = queries

    def run(t: int) -> None:
        lo, hi = bounds[t]
        with torch_threads(1):
            _canonical_part(queries, queries64, shards, rows_s[lo:hi], cols_s[lo:hi], out_s[lo:hi])

    if threads == 1:
        run(0)
    else:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="exact_topk_rescore") as pool:
            list(pool.map(run, range(threads)))
    out[order] = out_s
    return out


def topk_of_pairs(rows: torch.Tensor, cols: torch.Tensor, scores: torch.Tensor, num_queries: int,
                  k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query, the top-``k`` of its pairs by (score desc, corpus index asc); missing slots -inf / -1."""
    vals = torch.full((num_queries, k), -math.inf, dtype=scores.dtype)
    idx = torch.full((num_queries, k), -1, dtype=torch.int64)
    if rows.numel() == 0 or k == 0:
        return vals, idx
    order = torch.argsort(cols, stable=True)
    order = order[torch.argsort(scores[order], descending=True, stable=True)]
    order = order[torch.argsort(rows[order], stable=True)]
    counts = torch.bincount(rows, minlength=num_queries)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(k)
    take = rank.unsqueeze(0) < counts.unsqueeze(1)  # [Q, k]
    pos = (starts.unsqueeze(1) + rank.unsqueeze(0))[take]
    vals[take] = scores[order[pos]]
    idx[take] = cols[order[pos]]
    return vals, idx


@dataclass(frozen=True)
class TileBound:
    """The error bound of one first-pass tile precision: ``|a - canonical| <= E(a)`` for a tile score ``a``,
    ``E(a) = relative |a| + alpha_q |c| + 3 slack`` (inflated by :data:`SAFETY`).

    ``terms(queries)`` gives ``(queries in the tile dtype, alpha_q, |q|)`` (float64 factors); ``floor(x)``
    the largest value of the tile dtype ``<= x`` (float64 in). ``exact``: the tile scores are the result
    (float64 tiles: ``E = 0``, no rescoring)."""

    name: str
    dtype: torch.dtype
    relative: float
    terms: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    floor: Callable[[torch.Tensor], torch.Tensor]
    exact: bool = False

    def fixed(self, alpha: torch.Tensor, query_norm: torch.Tensor, corpus_norm: float, dim: int) -> torch.Tensor:
        """The part of ``E`` that does not depend on the score, for corpus rows of norm <= ``corpus_norm``."""
        if self.exact:
            return torch.zeros_like(alpha)
        return (alpha * corpus_norm + 3 * flush_slack(dim, query_norm, corpus_norm)) * SAFETY

    def error_from(self, approx: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """``E`` (float64) of tile scores ``approx`` whose queries have the fixed parts ``fixed``."""
        if not self.relative:
            return fixed.expand(approx.shape)
        scale = approx.double().abs().nan_to_num(posinf=0.0)  # an excluded (-inf) entry stays -inf
        return self.relative * SAFETY * scale + fixed

    def error(self, approx: torch.Tensor, alpha: torch.Tensor, query_norm: torch.Tensor, corpus_norm: float,
              dim: int) -> torch.Tensor:
        """``E`` (float64) for tile scores ``approx`` of queries (``alpha``, ``query_norm``) against corpus
        rows of norm at most ``corpus_norm``."""
        return self.error_from(approx, self.fixed(alpha, query_norm, corpus_norm, dim))

    def threshold_from(self, lam: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """The largest tile-dtype ``T`` per query such that every ``a`` with ``a + E(a) >= lam`` has
        ``a >= T`` (so comparing the tile with ``T`` misses no entry whose upper end reaches ``lam``)."""
        rest = lam - fixed  # its rounding (2^-53 relative) is far inside the floors' margins
        if not self.relative:
            return self.floor(rest)
        slope = self.relative * SAFETY
        rest = torch.where(rest >= 0, rest / (1 + slope), rest / (1 - slope))
        return self.floor(rest - rest.abs() * 2.0**-40 - 2.0**-140)  # less the divisions' own rounding


def float32_floor(x: torch.Tensor) -> torch.Tensor:
    """A float32 ``<= x`` within 4 ulp of it (float64 in; below the float32 range: its minimum; ``+inf``
    stays): ``x`` less ``2^-23 |x|`` rounded to nearest cannot round back above ``x``."""
    low = (x - x.abs() * 2.0**-23 - 2.0**-149).clamp(min=-torch.finfo(torch.float32).max).float()
    return low.nan_to_num(nan=math.inf)  # inf - inf


def _float32_terms(queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    norm = float64_norms(queries)
    dim = queries.shape[1]
    return queries, (float32_matmul_error(dim) + canonical_error(dim)) * norm * SAFETY, norm


#: float32 tiles: ``|s - canon| <= (gamma_D(2^-24) + canonical_error) |q| |c|`` (no output rounding).
FLOAT32_BOUND = TileBound("float32", torch.float32, 0.0, _float32_terms, float32_floor)


def _bf16_terms(queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(bf16 queries, alpha_q, |q|)`` with ``alpha_q = (u + gamma_D (1 + u)) |q_h| + |q_l| + canonical_error |q|``
    (``|q_l|``, the query's actual rounding residual, is about ``0.35 u |q|``)."""
    dim = queries.shape[1]
    q_h = queries.to(torch.bfloat16)
    q_l = queries - q_h.float()  # exact: the rounding residual of a float32 value fits in float32
    norm_h, norm_l, norm = float64_norms(q_h.float()), float64_norms(q_l), float64_norms(queries)
    acc = float32_matmul_error(dim)
    alpha = ((U_BF16 + acc * (1 + U_BF16)) * norm_h + norm_l + canonical_error(dim) * norm) * SAFETY
    return q_h, alpha, norm


def bf16_floor(x: torch.Tensor) -> torch.Tensor:
    """The largest bfloat16 ``<= x`` (float64 in; below ``-max`` clamps to ``-max``, ``+inf`` stays)."""
    x = x.clamp(min=-_BF16_MAX)
    f = x.float()
    f = torch.where(f.double() > x, torch.nextafter(f, torch.tensor(-math.inf)), f)
    h = f.to(torch.bfloat16)
    bits = h.view(torch.int16)
    # one step down: smaller magnitude for a positive number, larger for a negative one, -min below +0
    down = torch.where(bits > 0, bits - 1, torch.where(bits == 0, torch.full_like(bits, -32767), bits + 1))
    return torch.where(h.float() > f, down, bits).view(torch.bfloat16)


_BF16_MAX = (2 - 2.0**-7) * 2.0**127
#: bf16 tiles: ``E(a) = u/(1-u) |a| + alpha_q |c| + slack`` (see the module doc).
BF16_BOUND = TileBound("bf16", torch.bfloat16, U_BF16 / (1 - U_BF16), _bf16_terms, bf16_floor)


def _float64_terms(queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    zero = torch.zeros(queries.shape[0], dtype=torch.float64)
    return queries, zero, zero


def _float64_floor(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(min=-torch.finfo(torch.float64).max).nan_to_num(nan=math.inf)  # excluded (-inf) entries stay out


#: float64 tiles: their own scores are the result (``E = 0``; nothing is rescored).
FLOAT64_TILES = TileBound("float64", torch.float64, 0.0, _float64_terms, _float64_floor, exact=True)
