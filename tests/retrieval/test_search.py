"""Exact streaming top-k (`gcl_hf.retrieval.search`) against brute force and faiss IndexFlatIP."""

import numpy as np
import pytest
import torch

from gcl_hf.retrieval.search import build_faiss_index, exact_topk, faiss_topk, plan_search


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)


def _brute(q, c, k, exclude=None):
    """Full score matrix, ranked by (score desc, index asc)."""
    scores = (q.double() @ c.double().T).float() if q.dtype != torch.float32 else q @ c.T
    if exclude:
        for qi, ids in exclude.items():
            scores[qi, list(ids)] = -torch.inf
    vals, idx = torch.sort(scores, dim=1, descending=True, stable=True)
    return vals[:, :k], idx[:, :k]


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
    c, qs = _unit(n, d, 0), _unit(q, d, 1)
    vals, idx = exact_topk(qs, c, k, chunk_size=chunk, query_block=block)
    bv, bi = _brute(qs, c, k)
    assert vals.shape == idx.shape == (q, k)
    assert torch.equal(idx, bi)
    torch.testing.assert_close(vals, bv, rtol=0, atol=1e-6)


@pytest.mark.parametrize("threads", [2, 3])
def test_threaded_query_groups_match_brute_force(threads):
    c, q = _unit(2000, 16, 20), _unit(101, 16, 21)
    _, best = _brute(q, c, 2)
    excl = {0: {int(best[0, 0])}, 50: {int(best[50, 0]), int(best[50, 1])}, 100: {int(best[100, 0])}}
    before = torch.get_num_threads()
    vals, idx = exact_topk(q, c, 8, chunk_size=300, query_block=16, exclude=excl, num_threads=threads)
    assert torch.get_num_threads() == before  # restored
    bv, bi = _brute(q, c, 8, exclude=excl)
    assert torch.equal(idx, bi)
    torch.testing.assert_close(vals, bv, rtol=0, atol=1e-6)


def test_ties_prefer_lower_index():
    # Integer-valued embeddings: many exact ties, also across the k-th boundary and across chunks.
    g = torch.Generator().manual_seed(3)
    c = torch.randint(0, 3, (1500, 4), generator=g).float()
    q = torch.randint(0, 3, (50, 4), generator=g).float()
    bv, bi = _brute(q, c, 12)
    for chunk, block in [(64, None), (100, 7), (1500, None), (13, 50)]:
        vals, idx = exact_topk(q, c, 12, chunk_size=chunk, query_block=block, num_threads=2)
        assert torch.equal(idx, bi), (chunk, block)
        assert torch.equal(vals, bv)


def test_duplicate_corpus_rows_tie_break():
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.6, 0.8]])
    q = torch.tensor([[1.0, 0.0]])
    _, idx = exact_topk(q, c, 3, chunk_size=2)
    assert idx.tolist() == [[0, 2, 3]]


def test_identical_to_faiss_flat_ip():
    c, q = _unit(5000, 64, 4), _unit(200, 64, 5)
    vals, idx = exact_topk(q, c, 10, chunk_size=700)
    index = build_faiss_index(c, batch_size=1234)
    fv, fi = faiss_topk(index, q, 10)
    assert isinstance(fi, torch.Tensor) and fi.dtype == torch.int64
    # Compare where the ranking is not decided by a float-rounding tie.
    gaps = (vals[:, :-1] - vals[:, 1:]).min(dim=1).values
    distinct = gaps > 1e-5
    assert distinct.sum() > 150
    assert torch.equal(idx[distinct], fi[distinct])
    torch.testing.assert_close(vals, fv, rtol=0, atol=1e-5)


def test_numpy_in_numpy_out_and_shards_and_memmap(tmp_path):
    c, q = _unit(900, 16, 6).numpy(), _unit(20, 16, 7).numpy()
    vals, idx = exact_topk(q, c, 5, chunk_size=128)
    assert isinstance(vals, np.ndarray) and isinstance(idx, np.ndarray)
    bv, bi = _brute(torch.from_numpy(q), torch.from_numpy(c), 5)
    np.testing.assert_array_equal(idx, bi.numpy())
    # A corpus given as shards (e.g. memory-mapped cache files) gives the same result.
    np.save(tmp_path / "a.npy", c[:400])
    np.save(tmp_path / "b.npy", c[400:])
    shards = [np.load(tmp_path / "a.npy", mmap_mode="r"), np.load(tmp_path / "b.npy", mmap_mode="r")]
    _, idx2 = exact_topk(q, shards, 5, chunk_size=128)
    np.testing.assert_array_equal(idx2, idx)
    # torch queries against a numpy corpus return tensors
    v3, i3 = exact_topk(torch.from_numpy(q), c, 5)
    assert isinstance(i3, torch.Tensor) and torch.equal(i3, bi)


def test_half_precision_inputs_are_scored_in_float32():
    c, q = _unit(600, 16, 8), _unit(10, 16, 9)
    vals, idx = exact_topk(q.half(), c.half(), 4, chunk_size=100)
    bv, bi = _brute(q.half().float(), c.half().float(), 4)
    assert vals.dtype == torch.float32
    assert torch.equal(idx, bi)


def test_k_larger_than_corpus_is_clamped():
    c, q = _unit(6, 4, 10), _unit(3, 4, 11)
    vals, idx = exact_topk(q, c, 50, chunk_size=4)
    assert idx.shape == (3, 6)
    assert sorted(idx[0].tolist()) == list(range(6))


@pytest.mark.parametrize("form", ["list", "dict", "pairs"])
def test_exclude(form):
    c, q = _unit(400, 8, 12), _unit(6, 8, 13)
    _, best = _brute(q, c, 3)
    excl = {0: {int(best[0, 0]), int(best[0, 1])}, 3: {int(best[3, 0])}, 5: set()}
    if form == "list":
        arg = [excl.get(i, ()) for i in range(6)]
    elif form == "dict":
        arg = excl
    else:
        arg = torch.tensor([(qi, ci) for qi, ids in excl.items() for ci in ids])
    vals, idx = exact_topk(q, c, 5, chunk_size=50, exclude=arg)
    bv, bi = _brute(q, c, 5, exclude=excl)
    assert torch.equal(idx, bi)
    assert int(best[0, 0]) not in idx[0].tolist() and int(best[3, 0]) not in idx[3].tolist()
    _, fi = faiss_topk(build_faiss_index(c), q, 5, exclude=arg)
    assert torch.equal(fi, bi)


def test_everything_excluded_gives_minus_one():
    c, q = _unit(5, 4, 14), _unit(2, 4, 15)
    vals, idx = exact_topk(q, c, 3, exclude={0: range(5)})
    assert idx[0].tolist() == [-1, -1, -1] and torch.isneginf(vals[0]).all()
    assert (idx[1] >= 0).all()


def test_memory_bounded_by_tile():
    """No allocation anywhere near the Q x N score matrix."""
    from torch.profiler import ProfilerActivity, profile

    c, q = _unit(8000, 16, 16), _unit(128, 16, 17)
    full_bytes = 128 * 8000 * 4
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        exact_topk(q, c, 10, chunk_size=1000, query_block=32)
    biggest = max(e.cpu_memory_usage for e in prof.events())
    assert 0 < biggest <= 32 * 1000 * 4 * 2 < full_bytes / 10


def test_plan_and_errors():
    plan = plan_search(5000, "cpu", chunk_size=3, k=10)
    assert plan.chunk_size == 11 and plan.row_filter
    assert plan_search(10, "cpu").query_block == 10
    with pytest.raises(ValueError, match="query_embeds must be"):
        exact_topk(torch.zeros(4), torch.zeros(3, 4), 1)
    with pytest.raises(ValueError, match=r"shape \(3, 5\); expected \[\*, 4\]"):
        exact_topk(torch.zeros(2, 4), torch.zeros(3, 5), 1)
    with pytest.raises(ValueError, match="k must be"):
        exact_topk(torch.zeros(2, 4), torch.zeros(3, 4), 0)
    with pytest.raises(ValueError, match="query index"):
        exact_topk(torch.zeros(2, 4), torch.zeros(3, 4), 1, exclude={5: [0]})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    c, q = _unit(5000, 32, 18), _unit(100, 32, 19)
    v_cpu, i_cpu = exact_topk(q, c, 10, chunk_size=512)
    v, i = exact_topk(q.cuda(), c, 10, chunk_size=512)  # CPU corpus streamed to the GPU
    assert i.is_cuda
    gaps = (v_cpu[:, :-1] - v_cpu[:, 1:]).min(dim=1).values > 1e-5
    assert torch.equal(i.cpu()[gaps], i_cpu[gaps])
