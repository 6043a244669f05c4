"""The bf16 first pass: its error bound against the canonical score, and whether the CPU runs it fast.

On CPUs with bf16 units (AVX512-BF16, AMX) a bf16 matmul runs several times faster than a float32 one.
Its scores are approximate; :data:`BF16_BOUND` gives every tile entry ``a`` a proven interval
``[a - E, a + E]`` around the canonical score (:mod:`gcl_hf.retrieval.search_rescore`), which the
shortlist scan (:mod:`gcl_hf.retrieval.search_shortlist`) uses to keep every entry that can be in the
canonical top-k and to rescore only those.

The bound. torch's CPU bf16 matmul (oneDNN; torch's own kernels where oneDNN does not apply) multiplies
bf16 inputs exactly into float32, accumulates in float32 and rounds the result once to bf16 (round to
nearest even; bf16 units may flush subnormals, covered by the absolute slack). With ``q = q_h + q_l``,
``q_h = bf16(q)``, and likewise ``c = c_h + c_l`` with ``|c_l| <= u |c|`` (``u = 2^-8``):

* inputs: ``|q.c - q_h.c_h| = |q_h.c_l + q_l.c| <= (u |q_h| + |q_l|) |c|``;
* accumulation: ``|acc - q_h.c_h| <= gamma_D(2^-24) |q_h| |c_h|``, with ``|c_h| <= (1 + u) |c|``;
* output rounding: ``|a - acc| <= u / (1 - u) |a|``;
* canonical score vs exact: ``canonical_error(D) |q| |c|``.

So ``E(a) = u/(1-u) |a| + alpha_q |c| + slack`` with ``alpha_q = (u + gamma_D (1 + u)) |q_h| + |q_l| +
canonical_error |q|`` per query (``|q_l|`` is the query's actual rounding residual, about ``0.35 u |q|``)
and ``|c|`` bounded per corpus chunk. For unit vectors ``E`` is about 0.005 plus 0.4 % of the score.
"""

from __future__ import annotations

import math

import torch

from gcl_hf.retrieval.search_rescore import (
    SAFETY,
    U_BF16,
    TileBound,
    canonical_error,
    float32_matmul_error,
    float64_norms,
)

_BF16_MAX = (2 - 2.0**-7) * 2.0**127


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


#: bf16 tiles (see the module doc).
BF16_BOUND = TileBound("bf16", torch.bfloat16, U_BF16 / (1 - U_BF16), query_terms, bf16_floor)


def score_error_bound(approx: torch.Tensor, alpha: torch.Tensor, query_norm: torch.Tensor, corpus_norm: float,
                      dim: int) -> torch.Tensor:
    """``E`` (float64) with ``|approx - canonical| <= E`` for bf16 tile scores ``approx``."""
    return BF16_BOUND.error(approx, alpha, query_norm, corpus_norm, dim)
