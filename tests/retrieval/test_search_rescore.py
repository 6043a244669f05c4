"""Canonical scores and the first passes' error bounds (`gcl_hf.retrieval.search.rescore`)."""

import pytest
import torch

from gcl_hf.retrieval.search.blas import matmul_into
from gcl_hf.retrieval.search.rescore import (
    BF16_BOUND,
    bf16_floor,
    canonical_error,
    canonical_scores,
    float32_floor,
    float32_matmul_error,
    max_row_norm,
)


@pytest.mark.parametrize("normalised", [True, False])
def test_error_bounds_hold_on_random_data(normalised):
    g = torch.Generator().manual_seed(100)
    q = torch.randn(64, 512, generator=g)
    c = torch.randn(2048, 512, generator=g)
    if normalised:
        q, c = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(c, dim=1)
    else:
        q, c = q * torch.rand(64, 1, generator=g) * 10, c * torch.rand(2048, 1, generator=g) * 10
    rows, cols = torch.meshgrid(torch.arange(64), torch.arange(2048), indexing="ij")
    canon = canonical_scores(q, [c], rows.reshape(-1), cols.reshape(-1)).view(64, 2048).double()
    exact = q.double() @ c.double().T
    q_norm, c_norm = q.double().norm(dim=1), max_row_norm(c)
    # canonical vs exact
    assert ((canon - exact).abs() <= canonical_error(512) * q_norm[:, None] * c_norm).all()
    # bf16 tile (what the first pass computes) vs canonical
    q_h, alpha, qn = BF16_BOUND.terms(q)
    approx = torch.mm(q_h, c.to(torch.bfloat16).T)
    bound = BF16_BOUND.error(approx, alpha[:, None], qn[:, None], c_norm, 512)
    err = (approx.double() - canon).abs()
    assert (err <= bound).all()
    assert (err / bound).max() > 0.05  # the bound is not vacuous: errors come within 20x of it
    # float32 tile vs canonical, on either BLAS (MKL through torch, OpenBLAS through numpy)
    beta = (float32_matmul_error(512) + canonical_error(512)) * q_norm[:, None] * c_norm
    for backend in ("torch", "numpy"):
        f32 = torch.empty(64, 2048)
        matmul_into(q, c, f32, backend)
        assert ((f32.double() - canon).abs() <= beta).all(), backend
        assert (f32.double() - canon).abs().max() > 0  # a real float32 product, not the canonical one

def test_bf16_floor():
    g = torch.Generator().manual_seed(110)
    scale = 10.0 ** torch.randint(-40, 38, (20000,), generator=g).double()
    x = torch.cat([torch.randn(20000, generator=g, dtype=torch.float64) * scale,
                   torch.tensor([0.0, -0.0, 1e-45, -1e-45, 2.0**-140, 3.0, 1.0 + 2.0**-9], dtype=torch.float64)])
    f = bf16_floor(x)
    assert f.dtype == torch.bfloat16
    assert (f.double() <= x).all()
    bits = f.view(torch.int16)  # the next bf16 up: one step of the bits (towards +inf)
    up = torch.where(bits >= 0, bits + 1, bits - 1).view(torch.bfloat16).double()
    up = torch.where(bits == -32768, torch.tensor(2.0**-133, dtype=torch.float64), up)  # -0 -> +min
    assert (up > x).all()  # f is the largest bf16 <= x
    assert float(bf16_floor(torch.tensor([-1e300], dtype=torch.float64)).float()) < -3e38  # clamps to -max
    assert float(bf16_floor(torch.tensor([float("inf")], dtype=torch.float64)).float()) == float("inf")

def test_float32_floor():
    g = torch.Generator().manual_seed(115)
    scale = 10.0 ** torch.randint(-44, 38, (20000,), generator=g).double()
    x = torch.cat([torch.randn(20000, generator=g, dtype=torch.float64) * scale,
                   torch.tensor([0.0, -0.0, 1e-46, -1e-46, 3.0, -3.5e38, 3.4e38], dtype=torch.float64)])
    f = float32_floor(x)
    assert f.dtype == torch.float32 and torch.isfinite(f).all()
    inside = x > -torch.finfo(torch.float32).max  # below: clamped to the minimum
    assert (f.double()[inside] <= x[inside]).all() and f[~inside].eq(-torch.finfo(torch.float32).max).all()
    inf = torch.tensor(float("inf"))
    up = f
    for _ in range(4):
        up = torch.nextafter(up, inf)
    normal = inside & (x.abs() >= 2.0**-126)
    assert (up.double()[normal] > x[normal]).all()  # within 4 ulp below x
    assert (f.double()[~normal & inside] >= x[~normal & inside] - 4 * 2.0**-149).all()  # subnormal steps

@pytest.mark.parametrize("rows,cols", [(1, 1), (1, 5), (3, 64), (7, 3), (64, 256)])
def test_bf16_matmul_accumulates_in_float32_for_every_shape(rows, cols):
    # The bound assumes float32 accumulation. 1024 products of 1 x 2^-10 sum to exactly 1 in float32, but a
    # bf16 accumulator stalls at 0.25-0.5; small shapes go to torch's own kernels, large ones to oneDNN.
    q = torch.ones(rows, 1024)
    c = torch.full((cols, 1024), 2.0**-10)
    q_h, alpha, qn = BF16_BOUND.terms(q)
    approx = torch.mm(q_h, c.to(torch.bfloat16).T)
    assert torch.equal(approx.float(), torch.ones(rows, cols))
    canon = torch.ones(rows, cols, dtype=torch.float64)
    assert ((approx.double() - canon).abs() <= BF16_BOUND.error(approx, alpha[:, None], qn[:, None],
                                                                 max_row_norm(c), 1024)).all()
