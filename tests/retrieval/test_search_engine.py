"""The CPU engine (`gcl_hf.retrieval.search.engine`): the tiling, the one group scan, and the shortlist pass
giving the exact top-k on either BLAS and for float64 tiles."""

import pytest
import torch

from gcl_hf.retrieval.search import exact_topk
from gcl_hf.retrieval.search.blas import ENV_VAR
from gcl_hf.retrieval.search.engine import (
    AUTO_MIN_QUERIES,
    AUTO_MIN_ROWS,
    GROUP,
    PassStats,
    auto_topk,
    candidates,
    plan_search,
    shortlist_topk,
)
from gcl_hf.retrieval.search.inputs import exclude_pairs, pairs_of_subset
from gcl_hf.retrieval.search.rescore import BF16_BOUND, FLOAT32_BOUND, FLOAT64_TILES
from tests.retrieval.search_cases import canonical_brute, unit


def test_plan():
    plan = plan_search(5000, "cpu", chunk_size=3, k=10)
    assert plan.chunk_size == 11  # a chunk holds more than k rows
    assert plan_search(10, "cpu").query_block == 10
    assert plan_search(5000, "cpu").chunk_size * plan_search(5000, "cpu").query_block == 1024 * 2048
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        plan_search(10, "cpu", chunk_size=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("width", [2 * GROUP, 3 * GROUP, GROUP + 5])
def test_group_scan_finds_every_entry_at_or_above_the_threshold(dtype, width):
    g = torch.Generator().manual_seed(width)
    scores = torch.randn(9, width, generator=g).to(dtype)
    scores[0, 7] = scores[0, 8] = 1.5  # ties with the threshold count
    scores[2, :] = -torch.inf  # an excluded row
    thresh = torch.tensor([1.5, 2.0, -1.0, 0.5, 1.0, 3.0, -0.25, 0.0, 1e-3], dtype=dtype)
    r, c = candidates(scores, thresh)
    expected = (scores >= thresh.unsqueeze(1)).nonzero(as_tuple=True)
    assert torch.equal(r, expected[0]) and torch.equal(c, expected[1])  # the same entries, row-major order


def _adversarial(seed):
    """Tie-heavy corpus: integer-valued rows (exact ties, also across chunks), copies of the queries, and
    near-ties that float32 kernels of different shapes order differently."""
    g = torch.Generator().manual_seed(seed)
    ints = torch.randint(-2, 3, (600, 64), generator=g).float()
    q = torch.cat([torch.randint(-2, 3, (6, 64), generator=g).float(), unit(6, 64, seed)])
    near = q[6] + 2e-7 * torch.randn(200, 64, generator=g)
    c = torch.cat([ints, near, q[7].expand(30, 64), unit(400, 64, seed + 1)])
    return q, c


@pytest.mark.parametrize("bound", [FLOAT32_BOUND, BF16_BOUND])
@pytest.mark.parametrize("case", ["random", "adversarial"])
def test_both_blas_give_the_canonical_top_k(bound, case):
    q, c = (unit(40, 48, 1), unit(2500, 48, 2)) if case == "random" else _adversarial(3)
    excl = {0: [int(canonical_brute(q[:1], c, 1)[1][0, 0])], 3: range(0, 1200, 3)}
    ref = canonical_brute(q, c, 12, exclude=excl)
    pairs = exclude_pairs(excl, q.shape[0], torch.device("cpu"))
    for matmul in ("torch", "numpy"):
        for threads, chunk, block in [(1, 256, None), (2, 300, 7)]:
            with torch.inference_mode():
                v, i = shortlist_topk(q, [c], 12, bound, chunk_size=chunk, query_block=block, pairs=pairs,
                                      threads=threads, cap=4096 if bound is BF16_BOUND else None, matmul=matmul)
            assert torch.equal(i, ref[1]) and torch.equal(v, ref[0]), (matmul, threads)


@pytest.mark.parametrize("bound", [FLOAT32_BOUND, BF16_BOUND])
def test_bound_raised_late_from_many_tiles_is_still_exact(bound):
    """Lambda is raised from the candidates of several tiles (of several query blocks) at once: many narrow
    tiles bring few candidates each, far fewer than one per query, so the bound lags many tiles behind."""
    q, c = unit(600, 32, 5), unit(6000, 32, 6)
    ref = canonical_brute(q, c, 7)
    for threads, block in [(1, 150), (2, 64)]:
        with torch.inference_mode():
            v, i = shortlist_topk(q, [c], 7, bound, chunk_size=40, query_block=block, threads=threads,
                                  cap=4096 if bound is BF16_BOUND else None)
        assert torch.equal(i, ref[1]) and torch.equal(v, ref[0]), threads


def test_exact_topk_with_each_blas_forced(monkeypatch):
    q, c = _adversarial(4)
    out = {}
    for name in ("torch", "numpy", "auto"):
        monkeypatch.setenv(ENV_VAR, name)
        out[name] = exact_topk(q, c, 9, chunk_size=256, num_threads=2)
    for name in ("numpy", "auto"):
        assert torch.equal(out[name][0], out["torch"][0]) and torch.equal(out[name][1], out["torch"][1])
    ref = canonical_brute(q, c, 9)
    assert torch.equal(out["torch"][1], ref[1]) and torch.equal(out["torch"][0], ref[0])
    monkeypatch.setenv(ENV_VAR, "fastest")
    with pytest.raises(ValueError, match=f"{ENV_VAR} must be one of torch, numpy, auto"):
        exact_topk(q, c, 9)


def _float64_brute(q, c, k, exclude=None):
    scores = q @ c.T
    for qi, ids in (exclude or {}).items():
        scores[qi, list(ids)] = -torch.inf
    vals, idx = torch.sort(scores, dim=1, descending=True, stable=True)
    return vals[:, :k], torch.where(torch.isneginf(vals), -1, idx)[:, :k]


@pytest.mark.parametrize("threads,chunk,block,k", [(1, 256, None, 10), (2, 300, 16, 10), (3, 11, 2, 25)])
def test_float64_tiles_rank_by_their_own_scores(threads, chunk, block, k):
    # Integer-valued float64 rows: every inner product is exact, so ties are exact and the order is known.
    g = torch.Generator().manual_seed(10)
    c = torch.randint(-3, 4, (1500, 8), generator=g).double()
    q = torch.randint(-3, 4, (70, 8), generator=g).double()
    excl = {0: range(0, 1500, 2), 5: range(1500), 9: [3, 4]}
    vals, idx = exact_topk(q, c, k, chunk_size=chunk, query_block=block, num_threads=threads, exclude=excl)
    bv, bi = _float64_brute(q, c, k, excl)
    assert vals.dtype == torch.float64
    assert torch.equal(idx, bi) and torch.equal(vals, bv)
    assert idx[5].eq(-1).all() and torch.isneginf(vals[5]).all()


def test_float64_random_matches_float64_brute_force():
    c, q = unit(3000, 32, 11).double(), unit(50, 32, 12).double()
    with torch.inference_mode():
        vals, idx = shortlist_topk(q, [c], 10, FLOAT64_TILES, chunk_size=512, threads=2)
    bv, bi = _float64_brute(q, c, 10)
    assert torch.equal(idx, bi)
    torch.testing.assert_close(vals, bv, rtol=0, atol=1e-14)


def _crowded(n, d, seed):
    """Unit vectors around one shared direction: scores crowd within the bf16 bound of each other."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * 0.05
    x[:, 0] += 1.0
    return torch.nn.functional.normalize(x, dim=1)


def _canonical_in_blocks(q, c, k, exclude=None):
    parts = [canonical_brute(q[s:s + 16], c, k, {qi - s: ids for qi, ids in (exclude or {}).items() if s <= qi < s + 16})
             for s in range(0, q.shape[0], 16)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


@pytest.mark.parametrize("case,expected", [("spread", "bf16"), ("crowded", "float32")])
def test_auto_tiles_follow_the_trial_and_give_the_canonical_top_k(case, expected):
    """precision="auto" runs the bf16 pass on a sample of the queries: spread-out embeddings keep short
    shortlists (bf16 tiles for all), crowded ones overflow them (float32 tiles); same result either way,
    exclusions of sampled and other queries included."""
    make = unit if case == "spread" else _crowded
    q, c = make(AUTO_MIN_QUERIES + 44, 32, 11), make(AUTO_MIN_ROWS, 32, 12)
    excl = {0: [3, 5, 8], 7: range(0, 2000, 7), q.shape[0] - 1: [int(i) for i in _canonical_in_blocks(q[-1:], c, 2)[1][0]]}
    ref = _canonical_in_blocks(q, c, 10, excl)
    pairs = exclude_pairs(excl, q.shape[0], torch.device("cpu"))
    v, i, tiles = auto_topk(q, [c], 10, pairs=pairs, threads=2)
    assert tiles == expected
    assert torch.equal(i, ref[1]) and torch.equal(v, ref[0])


def test_auto_keeps_float32_tiles_for_small_searches():
    q, c = unit(AUTO_MIN_QUERIES - 1, 16, 1), unit(AUTO_MIN_ROWS, 16, 2)
    assert auto_topk(q, [c], 5)[2] == "float32"
    assert auto_topk(unit(AUTO_MIN_QUERIES, 16, 1), [c[:-1]], 5)[2] == "float32"


def test_trial_pass_reports_and_leaves_overflowed_queries_empty():
    q, c = _crowded(12, 16, 3), _crowded(3000, 16, 4)
    stats = PassStats()
    with torch.inference_mode():
        v, i = shortlist_topk(q, [c], 5, BF16_BOUND, cap=20, stats=stats, redo=False)
    assert stats.queries == 12 and stats.overflowed > 0
    empty = (i == -1).all(dim=1)
    assert int(empty.sum()) == stats.overflowed and bool(torch.isneginf(v[empty]).all())
    ref = canonical_brute(q, c, 5)
    assert torch.equal(i[~empty], ref[1][~empty]) and torch.equal(v[~empty], ref[0][~empty])


def test_pairs_of_subset_renumbers_the_selected_queries():
    pairs = torch.tensor([[2, 1], [0, 3], [2, 4], [1, 9]])
    assert pairs_of_subset(pairs, torch.tensor([2, 1]), 3).tolist() == [[0, 1], [0, 4], [1, 9]]
    assert pairs_of_subset(pairs, torch.tensor([3]), 4) is None and pairs_of_subset(None, torch.tensor([0]), 1) is None
