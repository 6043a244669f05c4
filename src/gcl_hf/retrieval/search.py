"""Exact inner-product top-k search that streams the corpus in chunks.

:func:`exact_topk` never builds the ``Q x N`` score matrix: it scores one ``[query block, corpus chunk]``
tile at a time, so memory is bounded by the tile, not by the pool (the corpus may be a list of
memory-mapped shards). On CPU it returns the **canonical** top-k (:mod:`~gcl_hf.retrieval.search_rescore`):
scores are the float64 inner products of the float32 inputs rounded to float32, a function of the two
vectors alone, so the result does not depend on the tiling, the threads, the batch, or the precision of
the first pass (:mod:`~gcl_hf.retrieval.search_shortlist`): ``precision="bf16-rescore"``
(:mod:`~gcl_hf.retrieval.search_bf16`) returns the same indices and scores as ``"float32"``. float64
inputs and GPU queries use :mod:`~gcl_hf.retrieval.search_float32` (the tiles' own scores).

:func:`build_faiss_index` / :func:`faiss_topk` are the optional faiss backend
(``pip install gcl-hf[faiss]``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from gcl_hf.retrieval.faiss_index import build_faiss_index, faiss_topk
from gcl_hf.retrieval.search_bf16 import BF16_BOUND, bf16_supported
from gcl_hf.retrieval.search_float32 import (
    MIN_QUERIES_PER_THREAD,
    SearchPlan,
    plan_search,
    stream_topk,
    threaded_stream_topk,
)
from gcl_hf.retrieval.search_inputs import (
    Array,
    Exclude,
    as_tensor,
    chunk_specs,
    exclude_pairs,
    shards_of,
    torch_threads,
)
from gcl_hf.retrieval.search_rescore import FLOAT32_BOUND
from gcl_hf.retrieval.search_shortlist import (
    DEFAULT_SHORTLIST_CAP,
    SUPER_BLOCK,
    shortlist_topk,
)

__all__ = ["PRECISIONS", "SearchPlan", "bf16_supported", "build_faiss_index", "exact_topk", "faiss_topk",
           "plan_search"]

#: First-pass precisions of :func:`exact_topk` on CPU (all return the same top-k); "auto" is
#: "bf16-rescore" where the CPU has bf16 units (:func:`bf16_supported`), else "float32".
PRECISIONS = ("float32", "bf16-rescore", "auto")
_warned_no_bf16 = False


def _compute_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    if dtype == torch.float64:
        return torch.float64
    if device.type == "cpu" or dtype not in (torch.float16, torch.bfloat16):
        return torch.float32  # CPU half-precision inputs are scored from their exact float32 values
    return dtype


@contextlib.contextmanager
def _ieee_float32_matmuls() -> Iterator[None]:
    """float32 matmuls in full float32 for the call (``torch.set_float32_matmul_precision("medium")``
    would let oneDNN compute them in bf16 on CPU, which the float32 error bound does not cover)."""
    settings = torch.backends.mkldnn.matmul
    previous = settings.fp32_precision
    if previous != "ieee":
        settings.fp32_precision = "ieee"
    try:
        yield
    finally:
        if previous != "ieee":
            settings.fp32_precision = previous


def _warn_without_bf16_units() -> None:
    global _warned_no_bf16
    if not _warned_no_bf16 and not bf16_supported():
        _warned_no_bf16 = True
        warnings.warn("precision='bf16-rescore' on a CPU without bf16 units (AVX512-BF16/AMX): the result is "
                      "the same as float32 but it is likely slower", RuntimeWarning, stacklevel=3)


def exact_topk(
    query_embeds: Array,
    corpus_embeds: Array | Sequence[Array],
    k: int,
    *,
    chunk_size: int | None = None,
    query_block: int | None = None,
    exclude: Exclude = None,
    num_threads: int | None = None,
    precision: str = "float32",
    shortlist_cap: int | None = None,
    show_progress: bool = False,
) -> tuple[Array, Array]:
    """Exact top-``k`` corpus rows by inner product for every query, streaming the corpus.

    ``query_embeds`` is ``[Q, D]``; ``corpus_embeds`` is ``[N, D]`` or a list of ``[N_i, D]`` shards
    (tensors or numpy arrays, e.g. memory maps), scored in chunks of ``chunk_size`` rows on the
    queries' device. Returns ``(scores [Q, k'], indices [Q, k'])`` with ``k' = min(k, N)``, sorted by
    score descending and, for equal scores, by corpus index ascending; the same kind (tensor or
    array) as ``query_embeds``. ``exclude`` removes given corpus indices from given queries' rankings
    (see :data:`~gcl_hf.retrieval.search_inputs.Exclude`); slots left without a candidate get score
    ``-inf`` and index ``-1``. Peak extra memory is one ``query_block x chunk_size`` score tile plus one
    corpus chunk per thread (and a shortlist per query, ``<= shortlist_cap`` entries).

    On CPU, float32/float16/bfloat16 inputs are ranked by their **canonical score**: the inner product of
    the float32 values computed in float64 (fixed pairwise order) and rounded to float32, i.e. within
    float32 rounding of the exact product, and a function of the two vectors alone (a BLAS kernel's float32
    result depends on the block shapes, so results would otherwise change with the batch). A first pass
    over ``[query block, chunk]`` tiles keeps every entry that its proven rounding bound cannot exclude
    from the top-k; those are rescored canonically. ``precision`` picks the tiles:

    * ``"float32"``: float32 tiles (bound ``D 2^-24 |q| |c|``: the shortlist is about ``k``).
    * ``"bf16-rescore"``: bf16 tiles, several times faster where the CPU has bf16 units (AVX512-BF16 /
      AMX, see :func:`bf16_supported`; correct but slower elsewhere). The bound (about ``0.005 |q| |c|``
      plus 0.4 % of the score, see :mod:`~gcl_hf.retrieval.search_bf16`) assumes what torch's CPU bf16
      matmul does: exact products, float32 accumulation, one rounding to bf16. A query whose shortlist
      exceeds ``shortlist_cap`` (default 4096) is searched again with float32 tiles.
    * ``"auto"``: ``"bf16-rescore"`` where the CPU has bf16 units, else ``"float32"``.

    **Guarantee:** all three return the canonical top-k, so the same indices and scores, whatever
    ``chunk_size``, ``query_block``, ``num_threads`` or the other queries in the batch.

    float64 inputs are ranked by float64 tile scores; on a GPU the tiles run in the input precision
    (half precision stays half) and the scores are the tiles' (``precision`` "float32" or "auto").

    On CPU the corpus chunks are shared between ``num_threads`` Python threads (default:
    ``torch.get_num_threads()``) running single-threaded torch ops: no OpenMP barrier per small op.
    ``torch.set_num_threads`` and oneDNN's float32 matmul precision (``"ieee"``: a reduced-precision
    setting would break the float32 bound) are changed for the duration of the call and restored.
    Inputs must be finite. ``show_progress`` shows a tqdm bar over the corpus rows scanned.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    as_numpy = isinstance(query_embeds, np.ndarray)
    queries = as_tensor(query_embeds, "query_embeds")
    if queries.ndim != 2:
        raise ValueError(f"query_embeds must be [Q, D], got shape {tuple(queries.shape)}")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    shards = shards_of(corpus_embeds)
    num_q, dim = queries.shape
    chunk_specs(shards, max((int(s.shape[0]) for s in shards), default=0) or 1, dim)  # shape errors first
    total = sum(int(s.shape[0]) for s in shards)
    k = min(int(k), total)
    device = queries.device
    dtype = _compute_dtype(queries.dtype, device)
    canonical = device.type == "cpu" and dtype == torch.float32
    if precision == "auto":
        precision = "bf16-rescore" if canonical and bf16_supported() else "float32"
    if precision == "bf16-rescore" and not canonical:
        raise ValueError(f"precision={precision!r} needs float32/float16/bfloat16 queries on the CPU; got "
                         f"{queries.dtype} on {device.type}")
    queries = queries.to(dtype).contiguous()
    pairs = exclude_pairs(exclude, num_q, device)
    threads = 1 if device.type != "cpu" else max(1, int(num_threads or torch.get_num_threads()))
    if not canonical and num_threads is None:  # float64 tiles split the queries
        threads = max(1, min(threads, num_q // MIN_QUERIES_PER_THREAD))
    if k == 0 or num_q == 0:
        vals = torch.full((num_q, k), -float("inf"), dtype=dtype, device=device)
        idx = torch.full((num_q, k), -1, dtype=torch.int64, device=device)
    elif canonical:
        if precision == "bf16-rescore":
            _warn_without_bf16_units()
        bound, cap = (FLOAT32_BOUND, None) if precision == "float32" else (BF16_BOUND, shortlist_cap or DEFAULT_SHORTLIST_CAP)
        with tqdm(total=total * -(-num_q // SUPER_BLOCK), desc="exact top-k", unit="row", unit_scale=True,
                  disable=not show_progress) as bar, _ieee_float32_matmuls(), torch_threads(1) as blas_threads:
            vals, idx = shortlist_topk(queries, shards, k, bound, chunk_size=chunk_size, query_block=query_block,
                                       pairs=pairs, threads=threads, cap=cap, bar=bar, blas_threads=blas_threads)
    else:  # float64 on CPU, any dtype on a GPU: the tiles' own scores
        plan = plan_search(num_q, device, chunk_size, query_block, k)
        specs = chunk_specs(shards, plan.chunk_size, dim)
        with tqdm(total=total * threads, desc="exact top-k", unit="row", unit_scale=True,
                  disable=not show_progress) as bar:
            if device.type == "cpu":
                vals, idx = threaded_stream_topk(queries, shards, specs, k, chunk_size, query_block, pairs,
                                                 threads, bar)
            else:
                vals, idx = stream_topk(queries, shards, specs, k, plan, pairs, bar)
    if as_numpy:
        return vals.cpu().numpy(), idx.cpu().numpy()
    return vals, idx
