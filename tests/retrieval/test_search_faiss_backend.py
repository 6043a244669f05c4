"""The optional faiss backend (`gcl_hf.retrieval.search.faiss_backend`): the same conventions as `exact_topk`."""

import torch

from gcl_hf.retrieval.search import build_faiss_index, exact_topk, faiss_topk
from tests.retrieval.search_cases import unit


def test_identical_to_faiss_flat_ip():
    c, q = unit(5000, 64, 4), unit(200, 64, 5)
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
