"""The non-finite guard: stop training, naming the step and the pair, before a NaN/inf loss is applied.

Every process checks, and one small all-reduce makes them stop together (none hangs in the next collective).
"""

from __future__ import annotations

import torch

from gcl_hf.losses import distributed as _dist

__all__ = ["NonFiniteLossError", "check_finite_loss"]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; ``step`` and ``pairs`` say when and where."""

    def __init__(self, message: str, *, step: int, pairs: list[str]):
        super().__init__(message)
        self.step = step
        self.pairs = pairs


def check_finite_loss(
    loss: torch.Tensor, pair_losses: dict[str, torch.Tensor], *, step: int, epoch: float | None = None
) -> None:
    """Raise `NonFiniteLossError` when ``loss`` or a pair's loss is NaN/inf on any process.

    ``step`` is the 1-based optimizer step about to be taken; ``epoch`` (optional) is added to the message.
    """
    names = list(pair_losses)
    values = torch.stack([loss.detach().float().reshape(())] +
                         [pair_losses[n].detach().float().reshape(()).to(loss.device) for n in names])
    local_bad = ~torch.isfinite(values)
    bad = local_bad.float()
    if _dist.is_distributed():
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
    if not bool(bad.any()):
        return
    flagged = [n for n, flag in zip(names, bad[1:].tolist()) if flag]
    shown = ", ".join(
        f"{n} = {pair_losses[n].item():g}" if local_bad[1 + names.index(n)] else f"{n} (on another process)"
        for n in flagged
    ) or f"total = {values[0].item():g} (every pair finite: check pair_weights)"
    where = f" on process {_dist.rank()}" if _dist.is_distributed() else ""
    when = f", epoch {epoch:.2f}" if epoch is not None else ""
    raise NonFiniteLossError(
        f"GCL loss is not finite at training step {step}{when}{where}: {shown}. Training stopped before "
        "this update. Usual causes: a learning rate too high for the temperature or the towers, fp16 "
        "overflow (try bf16), or corrupt inputs in this batch. Set nan_guard=False to train through it.",
        step=step,
        pairs=flagged,
    )
