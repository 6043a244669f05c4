"""Shared cases of the search tests: unit vectors and the brute-force rankings the search must reproduce."""

import torch

from gcl_hf.retrieval.search.rescore import pairwise_sum


def unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)


def brute(q, c, k, exclude=None):
    """Full score matrix of canonical scores (float64 inner products rounded to float32), ranked by
    (score desc, index asc)."""
    scores = (q.double() @ c.double().T).float()
    if exclude:
        for qi, ids in exclude.items():
            scores[qi, list(ids)] = -torch.inf
    vals, idx = torch.sort(scores, dim=1, descending=True, stable=True)
    return vals[:, :k], idx[:, :k]


def canonical_brute(q, c, k, exclude=None):
    """The canonical definition itself, pair by pair: float64 products summed by the fixed pairwise tree,
    rounded to float32; ranked by (score desc, index asc)."""
    prods = q.double()[:, None, :] * c.double()[None, :, :]
    scores = pairwise_sum(prods.reshape(-1, q.shape[1])).float().view(q.shape[0], c.shape[0])
    for qi, ids in (exclude or {}).items():
        scores[qi, list(ids)] = -torch.inf
    vals, idx = torch.sort(scores, dim=1, descending=True, stable=True)
    idx = torch.where(torch.isneginf(vals), -1, idx)
    return vals[:, :k], idx[:, :k]
