"""The entry point of the exact search: :func:`exact_topk` checks its inputs and picks the engine.

float32 / float16 / bfloat16 queries on CPU: the canonical top-k through the shortlist engine
(:mod:`~gcl_hf.retrieval.search.engine`) with float32 tiles (on the faster BLAS,
:mod:`~gcl_hf.retrieval.search.blas`) or bf16 tiles, rescored canonically
(:mod:`~gcl_hf.retrieval.search.rescore`); float64 queries on CPU: the same engine with float64 tiles,
whose own scores are the result; queries on an accelerator: the running top-k of
:mod:`~gcl_hf.retrieval.search.accelerator`.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from gcl_hf.retrieval.search.accelerator import stream_topk
from gcl_hf.retrieval.search.blas import (
    bf16_supported,
    ieee_float32_matmuls,
    numpy_blas_threads,
    resolve_backend,
)
from gcl_hf.retrieval.search.engine import (
    DEFAULT_SHORTLIST_CAP,
    SUPER_BLOCK,
    auto_topk,
    plan_search,
    shortlist_topk,
)
from gcl_hf.retrieval.search.inputs import (
    Array,
    Exclude,
    as_tensor,
    chunk_specs,
    exclude_pairs,
    shards_of,
    torch_threads,
)
from gcl_hf.retrieval.search.rescore import BF16_BOUND, FLOAT32_BOUND, FLOAT64_TILES

#: First-pass precisions of :func:`exact_topk` on CPU (all return the same top-k); "auto" (the default) tries
#: bf16 tiles on a sample of the queries where the CPU has bf16 units (:func:`bf16_supported`).
PRECISIONS = ("float32", "bf16-rescore", "auto")
_warned_no_bf16 = False
logger = logging.getLogger(__name__)


def _compute_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    if dtype == torch.float64:
        return torch.float64
    if device.type == "cpu" or dtype not in (torch.float16, torch.bfloat16):
        return torch.float32  # CPU half-precision inputs are scored from their exact float32 values
    return dtype


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
    precision: str = "auto",
    shortlist_cap: int | None = None,
    show_progress: bool = False,
) -> tuple[Array, Array]:
    """Exact top-``k`` corpus rows by inner product for every query, streaming the corpus.

    ``query_embeds`` is ``[Q, D]``; ``corpus_embeds`` is ``[N, D]`` or a list of ``[N_i, D]`` shards
    (tensors or numpy arrays, e.g. memory maps), scored in chunks of ``chunk_size`` rows on the
    queries' device. Returns ``(scores [Q, k'], indices [Q, k'])`` with ``k' = min(k, N)``, sorted by
    score descending and, for equal scores, by corpus index ascending; the same kind (tensor or
    array) as ``query_embeds``. ``exclude`` removes given corpus indices from given queries' rankings
    (see :data:`~gcl_hf.retrieval.search.inputs.Exclude`); slots left without a candidate get score
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
      plus 0.4 % of the score, see :mod:`~gcl_hf.retrieval.search.rescore`) assumes what torch's CPU bf16
      matmul does: exact products, float32 accumulation, one rounding to bf16. A query whose shortlist
      exceeds ``shortlist_cap`` (default 4096) is searched again with float32 tiles.
    * ``"auto"`` (default): where the CPU has bf16 units, a trial of the bf16 pass on 64 of the queries
      decides: bf16 tiles when their shortlists stay short (spread-out embeddings: about half float32's
      time), float32 tiles when the scores crowd together (then bf16 tiles would be slower); float32 tiles
      without bf16 units, or for fewer than 256 queries or 16384 rows
      (:func:`~gcl_hf.retrieval.search.engine.auto_topk`).

    **Guarantee:** all three return the canonical top-k, so the same indices and scores, whatever
    ``chunk_size``, ``query_block``, ``num_threads`` or the other queries in the batch.

    float64 inputs are ranked by float64 tile scores; on a GPU the tiles run in the input precision
    (half precision stays half) and the scores are the tiles' (``precision`` "float32" or "auto").

    float32 tiles run on numpy's OpenBLAS on AMD CPUs and on torch's MKL elsewhere
    (:mod:`~gcl_hf.retrieval.search.blas`; ``GCL_HF_SEARCH_BLAS=torch|numpy|auto`` overrides); the result
    is the same on either.

    On CPU the corpus chunks are shared between ``num_threads`` Python threads (default:
    ``torch.get_num_threads()``) running single-threaded torch ops: no OpenMP barrier per small op.
    ``torch.set_num_threads`` (and numpy's BLAS threads) and oneDNN's float32 matmul precision (``"ieee"``: a
    reduced-precision setting would break the float32 bound) are changed for the duration of the call and
    restored.
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
    if precision == "auto" and not (canonical and bf16_supported()):
        precision = "float32"
    if precision == "bf16-rescore" and not canonical:
        raise ValueError(f"precision={precision!r} needs float32/float16/bfloat16 queries on the CPU; got "
                         f"{queries.dtype} on {device.type}")
    queries = queries.to(dtype).contiguous()
    pairs = exclude_pairs(exclude, num_q, device)
    threads = 1 if device.type != "cpu" else max(1, int(num_threads or torch.get_num_threads()))
    if k == 0 or num_q == 0:
        vals = torch.full((num_q, k), -float("inf"), dtype=dtype, device=device)
        idx = torch.full((num_q, k), -1, dtype=torch.int64, device=device)
    elif device.type == "cpu":
        if precision == "bf16-rescore":
            _warn_without_bf16_units()
        cap = (shortlist_cap or DEFAULT_SHORTLIST_CAP) if precision != "float32" else None
        bound = FLOAT64_TILES if not canonical else BF16_BOUND if precision == "bf16-rescore" else FLOAT32_BOUND
        matmul = resolve_backend() if canonical else "torch"  # bf16 queries over the cap go to float32 tiles
        with tqdm(total=total * -(-num_q // SUPER_BLOCK), desc="exact top-k", unit="row", unit_scale=True,
                  disable=not show_progress) as bar, ieee_float32_matmuls(), torch_threads(1) as blas_threads, \
                numpy_blas_threads(1 if threads > 1 else blas_threads) if matmul == "numpy" else contextlib.nullcontext():
            options = {"chunk_size": chunk_size, "query_block": query_block, "pairs": pairs, "threads": threads,
                       "cap": cap, "bar": bar, "blas_threads": blas_threads, "matmul": matmul}
            if precision == "auto":
                vals, idx, tiles = auto_topk(queries, shards, k, **options)
                logger.debug("exact_topk: precision='auto' chose %s tiles", tiles)
            else:
                vals, idx = shortlist_topk(queries, shards, k, bound, **options)
    else:  # an accelerator: the tiles' own scores
        plan = plan_search(num_q, device, chunk_size, query_block, k)
        with tqdm(total=total, desc="exact top-k", unit="row", unit_scale=True, disable=not show_progress) as bar:
            vals, idx = stream_topk(queries, shards, chunk_specs(shards, plan.chunk_size, dim), k, plan, pairs, bar)
    if as_numpy:
        return vals.cpu().numpy(), idx.cpu().numpy()
    return vals, idx
