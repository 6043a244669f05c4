"""Small `torch.distributed` helpers for the contrastive loss: who am I, and gather with gradient.

`gather_with_grad` is the one collective the GCL loss needs: every process contributes its
local embeddings, every process gets the concatenation (in rank order), and the backward pass
sends each process the *sum over all processes* of the gradients that reached its own slice.
That is the rule that makes a multi-process loss equal a one-process loss (see `gcl_hf.losses.gcl`).

It is our own `autograd.Function` rather than `torch.distributed.nn.functional.all_gather`
(deprecated in torch 2.x and warning on every call); the maths is the same: forward
all-gather, backward reduce-scatter (NCCL/XCCL) or all-reduce + slice (gloo and others).

Every process must pass a tensor of the same shape: unequal local batches are rejected with a
`ValueError` on every process (checked with one tiny all-gather of the shapes), because the
loss's "mean of the local means" equals the global mean only for equal local batches anyway.
Use a sampler that gives every process the same batch size (`DistributedSampler`,
accelerate's `even_batches=True`, or `drop_last=True`).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "world_size", "rank", "gather_with_grad"]

_MAX_DIMS = 8


def is_distributed(group: dist.ProcessGroup | None = None) -> bool:
    """True when `torch.distributed` is initialised and the group has more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def world_size(group: dist.ProcessGroup | None = None) -> int:
    """Number of processes in the group (1 when `torch.distributed` is not initialised)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(group)
    return 1


def rank(group: dist.ProcessGroup | None = None) -> int:
    """This process's rank in the group (0 when `torch.distributed` is not initialised)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group)
    return 0


def _uses_reduce_scatter(group: dist.ProcessGroup | None) -> bool:
    return str(dist.get_backend(group)).lower() in ("nccl", "xccl")


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0; backward returns this rank's slice of the summed gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:  # type: ignore[override]
        tensor = tensor.contiguous()
        ctx.group = group
        ctx.local_rows = tensor.shape[0]
        ws = dist.get_world_size(group)
        if _uses_reduce_scatter(group):
            out = tensor.new_empty((ws * tensor.shape[0], *tensor.shape[1:]))
            dist.all_gather_into_tensor(out, tensor, group=group)
            return out
        parts = [torch.empty_like(tensor) for _ in range(ws)]
        dist.all_gather(parts, tensor, group=group)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        grad = grad.contiguous()
        group, rows = ctx.group, ctx.local_rows
        if _uses_reduce_scatter(group):
            out = grad.new_empty((rows, *grad.shape[1:]))
            dist.reduce_scatter_tensor(out, grad, op=dist.ReduceOp.SUM, group=group)
            return out, None
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=group)
        start = dist.get_rank(group) * rows
        return grad[start : start + rows], None


def _check_same_shape(tensor: torch.Tensor, group: dist.ProcessGroup | None) -> None:
    if tensor.ndim > _MAX_DIMS:
        raise ValueError(f"gather_with_grad supports tensors of at most {_MAX_DIMS} dims, got {tensor.ndim}")
    code = torch.zeros(_MAX_DIMS + 1, dtype=torch.long, device=tensor.device)
    code[0] = tensor.ndim
    if tensor.ndim:
        code[1 : tensor.ndim + 1] = torch.tensor(tensor.shape, dtype=torch.long)
    codes = [torch.empty_like(code) for _ in range(dist.get_world_size(group))]
    dist.all_gather(codes, code, group=group)
    shapes = [tuple(c[1 : int(c[0]) + 1].tolist()) for c in codes]
    if any(s != shapes[0] for s in shapes):
        listing = ", ".join(f"rank {r}: {list(s)}" for r, s in enumerate(shapes))
        raise ValueError(
            "gather_with_grad needs the same tensor shape on every process (equal local batch "
            f"sizes), got {listing}. Give every process the same batch size "
            "(DistributedSampler, accelerate even_batches=True, or drop_last=True)."
        )


def gather_with_grad(
    tensor: torch.Tensor, group: dist.ProcessGroup | None = None, *, check_shapes: bool = True
) -> torch.Tensor:
    """Concatenate `tensor` from every process along dim 0 (rank order), keeping the gradient.

    Identity when not distributed. The backward gives each process the sum over processes of
    the gradients that reached its slice. With `check_shapes` (default) a mismatch of shapes
    between processes raises `ValueError` on every process instead of hanging or corrupting.
    """
    if not is_distributed(group):
        return tensor
    if check_shapes:
        _check_same_shape(tensor, group)
    return _GatherWithGrad.apply(tensor, group)
