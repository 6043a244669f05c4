"""Exact inner-product top-k search that streams the corpus in chunks (:func:`exact_topk`).

The search never builds the ``Q x N`` score matrix: it scores one ``[query block, corpus chunk]`` tile at a
time, so memory is bounded by the tile, not by the pool (the corpus may be a list of memory-mapped shards).
On CPU it returns the **canonical** top-k: scores are the float64 inner products of the float32 inputs
rounded to float32, a function of the two vectors alone, so the result does not depend on the tiling, the
threads, the batch, the BLAS, or the precision of the first pass.

Modules, by role: ``exact`` (the entry point), ``inputs`` (queries, shards, chunks, exclusions), ``engine``
(the CPU streaming scan and its shortlist), ``rescore`` (canonical scores and the first passes' error
bounds), ``blas`` (which kernel multiplies the tiles), ``accelerator`` (the running top-k on a GPU),
``faiss_backend`` (the optional faiss ``IndexFlatIP``, ``pip install gcl-hf[faiss]``).
"""

from typing import Literal

from gcl_hf.retrieval.search.blas import bf16_supported
from gcl_hf.retrieval.search.exact import PRECISIONS, exact_topk
from gcl_hf.retrieval.search.faiss_backend import build_faiss_index, faiss_topk

__all__ = ["PRECISIONS", "SEARCH_BACKENDS", "SearchBackend", "bf16_supported", "build_faiss_index", "exact_topk",
           "faiss_topk", "parse_search_backend"]

#: How a corpus is searched: this package's exact streaming top-k, or faiss' flat inner-product index.
SearchBackend = Literal["exact", "faiss"]
SEARCH_BACKENDS: tuple[str, ...] = ("exact", "faiss")


def parse_search_backend(value: object) -> SearchBackend:
    """The one parser of the search backend (`GCLIndex`'s ``backend``, `evaluate_retrieval`'s ``index``, the CLI's
    ``--search-backend``)."""
    if value not in SEARCH_BACKENDS:
        raise ValueError(f"search backend {value!r}: expected one of {', '.join(SEARCH_BACKENDS)}")
    return value  # type: ignore[return-value]
