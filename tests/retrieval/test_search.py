"""`exact_topk` (`gcl_hf.retrieval.search.exact`): the canonical top-k against brute force, for every input
form, tiling, thread count and first-pass precision."""

import numpy as np
import pytest
import torch

from gcl_hf.retrieval.search import build_faiss_index, exact_topk, faiss_topk
from tests.retrieval.search_cases import brute, canonical_brute, unit


@pytest.mark.parametrize(
    "n,q,d,k,chunk,block",
    [
        (3000, 70, 32, 10, 256, None),  # chunks do not divide N
        (3000, 70, 32, 10, 256, 16),  # several query blocks
        (500, 9, 16, 1, 64, None),
        (200, 5, 8, 25, 11, 2),  # k larger than a chunk
        (40, 3, 8, 7, None, None),  # default plan: one chunk
    ],
)
def test_matches_brute_force(n, q, d, k, chunk, block):
    c, qs = unit(n, d, 0), unit(q, d, 1)
    vals, idx = exact_topk(qs, c, k, chunk_size=chunk, query_block=block)
    bv, bi = brute(qs, c, k)
    assert vals.shape == idx.shape == (q, k)
    assert torch.equal(idx, bi)
    torch.testing.assert_close(vals, bv, rtol=0, atol=1e-6)

@pytest.mark.parametrize("threads", [2, 3])
def test_threaded_query_groups_match_brute_force(threads):
    c, q = unit(2000, 16, 20), unit(101, 16, 21)
    _, best = brute(q, c, 2)
    excl = {0: {int(best[0, 0])}, 50: {int(best[50, 0]), int(best[50, 1])}, 100: {int(best[100, 0])}}
    before = torch.get_num_threads()
    vals, idx = exact_topk(q, c, 8, chunk_size=300, query_block=16, exclude=excl, num_threads=threads)
    assert torch.get_num_threads() == before  # restored
    bv, bi = brute(q, c, 8, exclude=excl)
    assert torch.equal(idx, bi)
    torch.testing.assert_close(vals, bv, rtol=0, atol=1e-6)

def test_ties_prefer_lower_index():
    # Integer-valued embeddings: many exact ties, also across the k-th boundary and across chunks.
    g = torch.Generator().manual_seed(3)
    c = torch.randint(0, 3, (1500, 4), generator=g).float()
    q = torch.randint(0, 3, (50, 4), generator=g).float()
    bv, bi = brute(q, c, 12)
    for chunk, block in [(64, None), (100, 7), (1500, None), (13, 50)]:
        vals, idx = exact_topk(q, c, 12, chunk_size=chunk, query_block=block, num_threads=2)
        assert torch.equal(idx, bi), (chunk, block)
        assert torch.equal(vals, bv)

def test_duplicate_corpus_rows_tie_break():
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.6, 0.8]])
    q = torch.tensor([[1.0, 0.0]])
    _, idx = exact_topk(q, c, 3, chunk_size=2)
    assert idx.tolist() == [[0, 2, 3]]

def test_numpy_in_numpy_out_and_shards_and_memmap(tmp_path):
    c, q = unit(900, 16, 6).numpy(), unit(20, 16, 7).numpy()
    vals, idx = exact_topk(q, c, 5, chunk_size=128)
    assert isinstance(vals, np.ndarray) and isinstance(idx, np.ndarray)
    _bv, bi = brute(torch.from_numpy(q), torch.from_numpy(c), 5)
    np.testing.assert_array_equal(idx, bi.numpy())
    # A corpus given as shards (e.g. memory-mapped cache files) gives the same result.
    np.save(tmp_path / "a.npy", c[:400])
    np.save(tmp_path / "b.npy", c[400:])
    shards = [np.load(tmp_path / "a.npy", mmap_mode="r"), np.load(tmp_path / "b.npy", mmap_mode="r")]
    _, idx2 = exact_topk(q, shards, 5, chunk_size=128)
    np.testing.assert_array_equal(idx2, idx)
    # torch queries against a numpy corpus return tensors
    _v3, i3 = exact_topk(torch.from_numpy(q), c, 5)
    assert isinstance(i3, torch.Tensor) and torch.equal(i3, bi)

def test_half_precision_inputs_are_scored_in_float32():
    c, q = unit(600, 16, 8), unit(10, 16, 9)
    vals, idx = exact_topk(q.half(), c.half(), 4, chunk_size=100)
    _bv, bi = brute(q.half().float(), c.half().float(), 4)
    assert vals.dtype == torch.float32
    assert torch.equal(idx, bi)

def test_k_larger_than_corpus_is_clamped():
    c, q = unit(6, 4, 10), unit(3, 4, 11)
    _vals, idx = exact_topk(q, c, 50, chunk_size=4)
    assert idx.shape == (3, 6)
    assert sorted(idx[0].tolist()) == list(range(6))

@pytest.mark.parametrize("form", ["list", "dict", "pairs"])
def test_exclude(form):
    c, q = unit(400, 8, 12), unit(6, 8, 13)
    _, best = brute(q, c, 3)
    excl = {0: {int(best[0, 0]), int(best[0, 1])}, 3: {int(best[3, 0])}, 5: set()}
    if form == "list":
        arg = [excl.get(i, ()) for i in range(6)]
    elif form == "dict":
        arg = excl
    else:
        arg = torch.tensor([(qi, ci) for qi, ids in excl.items() for ci in ids])
    _vals, idx = exact_topk(q, c, 5, chunk_size=50, exclude=arg)
    _bv, bi = brute(q, c, 5, exclude=excl)
    assert torch.equal(idx, bi)
    assert int(best[0, 0]) not in idx[0].tolist() and int(best[3, 0]) not in idx[3].tolist()
    _, fi = faiss_topk(build_faiss_index(c), q, 5, exclude=arg)
    assert torch.equal(fi, bi)

def test_everything_excluded_gives_minus_one():
    c, q = unit(5, 4, 14), unit(2, 4, 15)
    vals, idx = exact_topk(q, c, 3, exclude={0: range(5)})
    assert idx[0].tolist() == [-1, -1, -1] and torch.isneginf(vals[0]).all()
    assert (idx[1] >= 0).all()

def test_memory_bounded_by_tile():
    """No allocation anywhere near the Q x N score matrix."""
    from torch.profiler import ProfilerActivity, profile

    c, q = unit(8000, 16, 16), unit(128, 16, 17)
    full_bytes = 128 * 8000 * 4
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        exact_topk(q, c, 10, chunk_size=1000, query_block=32)
    biggest = max(e.cpu_memory_usage for e in prof.events())
    assert 0 < biggest <= 32 * 1000 * 4 * 2 < full_bytes / 10

def test_input_errors():
    with pytest.raises(ValueError, match="query_embeds must be"):
        exact_topk(torch.zeros(4), torch.zeros(3, 4), 1)
    with pytest.raises(ValueError, match=r"shape \(3, 5\); expected \[\*, 4\]"):
        exact_topk(torch.zeros(2, 4), torch.zeros(3, 5), 1)
    with pytest.raises(ValueError, match="k must be"):
        exact_topk(torch.zeros(2, 4), torch.zeros(3, 4), 0)
    with pytest.raises(ValueError, match="query index"):
        exact_topk(torch.zeros(2, 4), torch.zeros(3, 4), 1, exclude={5: [0]})

def _both(q, c, k, **kw):
    """float32 and bf16-rescore results; asserts they are bit-identical and returns one."""
    v32, i32 = exact_topk(q, c, k, **kw)
    v16, i16 = exact_topk(q, c, k, precision="bf16-rescore", **{key: v for key, v in kw.items()})
    assert torch.equal(i32, i16)
    assert torch.equal(v32, v16)
    return v32, i32

@pytest.mark.parametrize(
    "n,q,d,k,chunk,block,threads",
    [
        (3000, 70, 32, 10, 256, None, 1),  # chunks of 256: the int16 group scan
        (3000, 70, 32, 10, 300, 16, 2),  # 300 % 64 != 0: the plain comparison; several blocks, 2 threads
        (2000, 9, 48, 1, 512, None, 3),  # 48 is not a power of two (padded tree)
        (200, 5, 8, 25, 64, 2, 2),  # k of the order of a chunk
        (700, 130, 64, 5, None, None, None),  # default plan and threads
    ],
)
def test_bf16_rescore_identical_to_float32_and_canonical(n, q, d, k, chunk, block, threads):
    c, qs = unit(n, d, 30), unit(q, d, 31)
    vals, idx = _both(qs, c, k, chunk_size=chunk, query_block=block, num_threads=threads)
    bv, bi = canonical_brute(qs, c, k)
    assert torch.equal(idx, bi)
    assert torch.equal(vals, bv)

def test_result_does_not_depend_on_tiling_threads_or_batch():
    # Near-ties at the level of float32 rounding: rows that differ from a base vector by ~1e-7, so
    # matmul kernels of different shapes would order them differently.
    g = torch.Generator().manual_seed(40)
    base = unit(1, 256, 41)
    c = torch.nn.functional.normalize(base + 2e-7 * torch.randn(300, 256, generator=g), dim=1)
    c = torch.cat([unit(700, 256, 42), c])
    q = torch.nn.functional.normalize(base + 1e-3 * torch.randn(60, 256, generator=g), dim=1)
    ref_v, ref_i = canonical_brute(q, c, 20)
    for kw in [{"chunk_size": 128, "query_block": 7, "num_threads": 1}, {"chunk_size": 1000, "num_threads": 2},
               {"chunk_size": 64, "query_block": 60, "num_threads": 3}]:
        for precision in ("float32", "bf16-rescore"):
            v, i = exact_topk(q, c, 20, precision=precision, **kw)
            assert torch.equal(i, ref_i), (kw, precision)
            assert torch.equal(v, ref_v)
    v3, i3 = exact_topk(q[:3], c, 20)  # a 3-query batch ranks like the 60-query one (float32 matmuls
    # of a 3-row and a 60-row block order these rows differently)
    assert torch.equal(i3, ref_i[:3]) and torch.equal(v3, ref_v[:3])

def test_duplicates_beyond_the_kept_margin():
    # 40 copies of the best row: the float32 pass keeps k + 8 = 18 and must widen; ties go to the
    # lower index; the bf16 pass keeps every copy (all within its error bound) and rescores them.
    c = unit(3000, 32, 50)
    q = unit(20, 32, 51)
    dup = torch.randint(0, 3000, (40,), generator=torch.Generator().manual_seed(52))
    c[dup] = q[0]
    c[100:140] = q[1]  # a run of copies inside one chunk
    vals, idx = _both(q, c, 10, chunk_size=256)
    bv, bi = canonical_brute(q, c, 10)
    assert torch.equal(idx, bi) and torch.equal(vals, bv)
    assert idx[1].tolist() == list(range(100, 110))
    assert idx[0].tolist() == sorted(set(dup.tolist()))[:10]

def test_k_equal_to_pool_and_exclusions():
    c, q = unit(300, 16, 60), unit(12, 16, 61)
    vals, idx = _both(q, c, 300, chunk_size=64)
    bv, bi = canonical_brute(q, c, 300)
    assert torch.equal(idx, bi) and torch.equal(vals, bv)
    excl = {0: range(0, 300, 2), 3: range(298), 5: range(300), 11: [int(bi[11, 0])]}
    vals, idx = _both(q, c, 10, chunk_size=64, exclude=excl)
    bv, bi = canonical_brute(q, c, 10, exclude=excl)
    assert torch.equal(idx, bi) and torch.equal(vals, bv)
    assert idx[3, 2:].eq(-1).all() and idx[5].eq(-1).all() and torch.isneginf(vals[5]).all()

def test_crowded_scores_fall_back_to_float32_over_the_cap():
    # Every corpus row within 1e-4 of the query: every bf16 score is within the error bound of the
    # k-th, so the shortlist is the whole corpus; over the cap it goes to the float32 search.
    g = torch.Generator().manual_seed(70)
    q = unit(4, 64, 71)
    c = torch.nn.functional.normalize(q[0] + 1e-4 * torch.randn(900, 64, generator=g), dim=1)
    ref_v, ref_i = canonical_brute(q, c, 5)
    for cap in (16, 4096):
        v, i = exact_topk(q, c, 5, precision="bf16-rescore", chunk_size=128, shortlist_cap=cap, num_threads=2)
        assert torch.equal(i, ref_i) and torch.equal(v, ref_v), cap

def test_negative_zero_and_unnormalised_inputs():
    g = torch.Generator().manual_seed(80)
    c = torch.randn(1500, 24, generator=g) * torch.logspace(-3, 3, 1500)[:, None]  # norms over 6 decades
    q = torch.randn(30, 24, generator=g) * 7
    q[0] = 0  # every score 0: ties everywhere
    q[1] = -c[:1500].mean(0) * 1e3  # mostly negative scores
    vals, idx = _both(q, c, 7, chunk_size=128)
    bv, bi = canonical_brute(q, c, 7)
    assert torch.equal(idx, bi) and torch.equal(vals, bv)
    assert idx[0].tolist() == list(range(7))
    c_neg = -unit(800, 24, 81).abs()  # all scores of a positive query are negative: negative thresholds
    qp = unit(6, 24, 82).abs()
    vals, idx = _both(qp, c_neg, 4, chunk_size=128)
    assert (vals < 0).all() and torch.equal(idx, canonical_brute(qp, c_neg, 4)[1])

def test_bf16_on_numpy_memmap_shards(tmp_path):
    c, q = unit(1000, 32, 90).numpy(), unit(40, 32, 91).numpy()
    np.save(tmp_path / "a.npy", c[:450])
    np.save(tmp_path / "b.npy", c[450:])
    shards = [np.load(tmp_path / "a.npy", mmap_mode="r"), np.load(tmp_path / "b.npy", mmap_mode="r")]
    vals, idx = exact_topk(q, shards, 6, chunk_size=128, precision="bf16-rescore", exclude={3: [1, 2]})
    ref_v, ref_i = exact_topk(q, c, 6, chunk_size=200, exclude={3: [1, 2]})
    assert isinstance(idx, np.ndarray)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_array_equal(vals, ref_v)

def test_precision_options_and_errors():
    c, q = unit(100, 8, 120), unit(3, 8, 121)
    v, i = exact_topk(q, c, 4, precision="auto")
    v32, i32 = exact_topk(q, c, 4)
    assert torch.equal(i, i32) and torch.equal(v, v32)
    assert exact_topk(q.double(), c, 4, precision="auto")[1].shape == (3, 4)  # float64: the float64 tiles
    with pytest.raises(ValueError, match="precision must be one of"):
        exact_topk(q, c, 2, precision="int8")
    with pytest.raises(ValueError, match="needs float32/float16/bfloat16 queries on the CPU"):
        exact_topk(q.double(), c, 2, precision="bf16-rescore")
    with pytest.raises(ValueError, match="shortlist_cap must be >= k"):
        exact_topk(q, c, 5, precision="bf16-rescore", shortlist_cap=4)

def test_reduced_float32_matmul_precision_is_overridden_and_restored():
    c, q = unit(2000, 64, 130), unit(50, 64, 131)
    ref = canonical_brute(q, c, 10)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")  # lets oneDNN run float32 matmuls in bf16 on CPU
    try:
        vals, idx = exact_topk(q, c, 10, chunk_size=256)
        assert torch.backends.mkldnn.matmul.fp32_precision == "bf16"  # restored after the call
    finally:
        torch.set_float32_matmul_precision(before)
    assert torch.equal(idx, ref[1]) and torch.equal(vals, ref[0])

def test_bf16_memory_bounded_by_tile():
    from torch.profiler import ProfilerActivity, profile

    c, q = unit(8000, 16, 140), unit(128, 16, 141)
    full_bytes = 128 * 8000 * 4
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        exact_topk(q, c, 10, chunk_size=1024, query_block=32, precision="bf16-rescore", num_threads=1)
    biggest = max(e.cpu_memory_usage for e in prof.events())
    assert 0 < biggest < full_bytes / 10
