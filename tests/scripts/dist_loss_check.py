"""Worker for tests/test_loss_distributed.py: run under `torchrun --nproc_per_node 2`.

Every rank builds the same fixed global batch, takes its contiguous slice (rank r gets rows
[r·n, (r+1)·n)) as leaf tensors, computes `gcl_loss` for each option, backpropagates, and
writes loss, per-pair losses and gradients to `<outdir>/rank<r>.pt`. Rank 0 also writes the
global batch. It finally checks that unequal local batch sizes raise a clear ValueError.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from gcl_hf.losses.gcl import ALL_PAIRS, CLIP_PAIRS, gcl_loss

GLOBAL_N, DIM = 8, 6

# name -> (gcl_loss keyword arguments, modalities passed as None)
OPTIONS: dict[str, tuple[dict, tuple[str, ...]]] = {
    "modality-softmax-all_pairs": (dict(pairs=ALL_PAIRS), ()),
    "all-softmax-all_pairs": (dict(pairs=ALL_PAIRS, negatives="all"), ()),
    "modality-sigmoid-all_pairs": (dict(pairs=ALL_PAIRS, objective="sigmoid", logit_bias="bias"), ()),
    "modality-softmax-weighted_subset": (
        dict(pairs=[("image", "fused"), ("fused", "text")], pair_weights=[2.0, 0.5]), ()),
    "all-softmax-clip_pairs": (dict(pairs=CLIP_PAIRS, negatives="all"), ("fused",)),
    "modality-sigmoid-text_image": (
        dict(pairs=[("text", "image"), ("image", "fused")], pair_weights=[1.0, 3.0],
             objective="sigmoid", logit_bias="bias"), ()),
}


def global_batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1234)
    out = {m: torch.nn.functional.normalize(torch.randn(GLOBAL_N, DIM, generator=gen, dtype=torch.float64), dim=-1)
           for m in ("image", "text", "fused")}
    out["scale"] = torch.tensor(7.5, dtype=torch.float64)
    out["bias"] = torch.tensor(-1.25, dtype=torch.float64)
    return out


def run_options(batch: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, dict]:
    """Compute every option on rows [start, stop) of the batch; return loss, pair losses, grads."""
    results = {}
    for name, (kwargs, absent) in OPTIONS.items():
        leaves = {m: None if m in absent else batch[m][start:stop].clone().requires_grad_()
                  for m in ("image", "text", "fused")}
        scale = batch["scale"].clone().requires_grad_()
        bias = batch["bias"].clone().requires_grad_()
        kw = dict(kwargs)
        if kw.get("logit_bias") == "bias":
            kw["logit_bias"] = bias
        loss, pair_losses = gcl_loss(leaves["image"], leaves["text"], leaves["fused"], scale,
                                     return_pair_losses=True, **kw)
        loss.backward()
        res = {"loss": loss.detach(), "pair_losses": pair_losses, "scale_grad": scale.grad}
        if bias.grad is not None:
            res["bias_grad"] = bias.grad
        for m, t in leaves.items():
            if t is not None:
                res[f"{m}_grad"] = t.grad
        results[name] = res
    return results


def main(outdir: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    batch = global_batch()
    n = GLOBAL_N // world
    results = run_options(batch, rank * n, (rank + 1) * n)

    # unequal local batches must fail loudly on every rank (not hang, not mis-align targets)
    local = 3 + rank
    x = torch.nn.functional.normalize(torch.randn(local, DIM, dtype=torch.float64), dim=-1)
    try:
        gcl_loss(x, x.clone(), None, 5.0, pairs=CLIP_PAIRS)
        unequal_error = ""
    except ValueError as err:
        unequal_error = str(err)

    record = {"world_size": world, "rank": rank, "results": results, "unequal_error": unequal_error}
    if rank == 0:
        record["batch"] = batch
    torch.save(record, outdir / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
