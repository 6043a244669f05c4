"""The accelerator engine (`gcl_hf.retrieval.search.accelerator`): a running top-k in the tiles' precision.
Its logic runs on any device, so it is checked here on CPU tensors; the CUDA case runs where a GPU is."""

import pytest
import torch

from gcl_hf.retrieval.search import exact_topk
from gcl_hf.retrieval.search.accelerator import stream_topk
from gcl_hf.retrieval.search.engine import plan_search
from gcl_hf.retrieval.search.inputs import chunk_specs, exclude_pairs
from tests.retrieval.search_cases import unit


@pytest.mark.parametrize("chunk,block,k", [(64, None, 12), (100, 7, 12), (13, 50, 20), (1500, None, 3)])
def test_running_top_k_ties_prefer_lower_index_and_exclusions(chunk, block, k):
    g = torch.Generator().manual_seed(3)
    c = torch.randint(0, 3, (1500, 4), generator=g).float()  # exact ties, across the k-th and across chunks
    q = torch.randint(0, 3, (50, 4), generator=g).float()
    excl = {0: range(0, 1500, 2), 7: range(1500), 9: [1, 2, 3]}
    plan = plan_search(q.shape[0], "cuda", chunk, block, k)  # the accelerator's tiling
    vals, idx = stream_topk(q, [c], chunk_specs([c], plan.chunk_size, 4), k, plan,
                            exclude_pairs(excl, q.shape[0], torch.device("cpu")))
    scores = q @ c.T
    for qi, ids in excl.items():
        scores[qi, list(ids)] = -torch.inf
    bv, bi = torch.sort(scores, dim=1, descending=True, stable=True)
    bi = torch.where(torch.isneginf(bv), -1, bi)
    assert torch.equal(idx, bi[:, :k]) and torch.equal(vals, bv[:, :k])
    assert idx[7].eq(-1).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    c, q = unit(5000, 32, 18), unit(100, 32, 19)
    v_cpu, i_cpu = exact_topk(q, c, 10, chunk_size=512)
    _v, i = exact_topk(q.cuda(), c, 10, chunk_size=512)  # CPU corpus streamed to the GPU
    assert i.is_cuda
    gaps = (v_cpu[:, :-1] - v_cpu[:, 1:]).min(dim=1).values > 1e-5
    assert torch.equal(i.cpu()[gaps], i_cpu[gaps])
