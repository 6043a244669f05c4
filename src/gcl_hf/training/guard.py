"""The non-finite guard: stop training before a NaN/inf loss or gradient is applied to the weights.

Two checks, both before the optimizer step: the loss of every micro-batch (and each pair's loss), and the gradients
of every parameter once the backward passes of an optimizer step are done (a gradient can be NaN while the loss is
finite, e.g. an overflow in the backward pass). The errors name the step, the pairs or parameters at fault and the
ids of the batch's records (``id``, else the dataset row), so the batch can be inspected.

Inside the trainer both checks share one host synchronisation and one small all-reduce per optimizer step: the
losses are kept on the device as they come and looked at together with the gradients, just before the update.
Every process checks, so a process whose own values are finite still stops when another's are not (none hangs in
the next collective), and says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from transformers import TrainerCallback

from gcl_hf.data.records import ROW_INDEX_COLUMN, SkipCountingCollator
from gcl_hf.losses import distributed as _dist

__all__ = ["RECORD_IDS_KEY", "NonFiniteGradientError", "NonFiniteGuard", "NonFiniteLossError",
           "NonFiniteTrainingError", "RecordIdCollator", "check_finite_gradients", "check_finite_loss"]

#: Batch key under which `RecordIdCollator` passes the ids of the batch's records to the trainer.
RECORD_IDS_KEY = "record_ids"
_SHOWN_IDS = 32
_SHOWN_PARAMETERS = 8
_CAUSES = ("Usual causes: a learning rate too high for the temperature or the towers, fp16 overflow (try bf16), "
           "or corrupt inputs in this batch. Set nan_guard=False to train through it.")


class NonFiniteTrainingError(FloatingPointError):
    """Training stopped before an update with a NaN/inf value; ``step`` is the optimizer step it would have been,
    ``record_ids`` the ids of this process's records in that step's batch (empty when unknown)."""

    def __init__(self, message: str, *, step: int, record_ids: Sequence[Any] = ()):
        super().__init__(message)
        self.step = step
        self.record_ids = list(record_ids)


class NonFiniteLossError(NonFiniteTrainingError):
    """The training loss became NaN or infinite; ``pairs`` names the directed pairs at fault."""

    def __init__(self, message: str, *, step: int, pairs: list[str], record_ids: Sequence[Any] = ()):
        super().__init__(message, step=step, record_ids=record_ids)
        self.pairs = pairs


class NonFiniteGradientError(NonFiniteTrainingError):
    """A gradient became NaN or infinite while the loss was finite; ``parameters`` names this process's
    parameters whose gradient is not finite, last-registered (nearest the output) first, or is empty when only
    another process's are."""

    def __init__(self, message: str, *, step: int, parameters: list[str], record_ids: Sequence[Any] = ()):
        super().__init__(message, step=step, record_ids=record_ids)
        self.parameters = parameters


class RecordIdCollator(SkipCountingCollator):
    """The trainer's collator wrapper: counts skipped records (see `SkipCountingCollator`) and adds the ids of the
    batch's records under ``record_ids`` (their ``id``, else their dataset row ``__index__``), for the guard's
    messages. The trainer removes the key before the model sees the batch."""

    def __call__(self, records: list[Any]) -> Any:
        batch = super().__call__(records)
        if isinstance(batch, dict):
            ids = [_record_id(r) for r in records]
            if any(i is not None for i in ids):
                batch[RECORD_IDS_KEY] = ids
        return batch


def _record_id(record: Any) -> Any:
    if not isinstance(record, dict):
        return None
    for key in ("id", ROW_INDEX_COLUMN):
        value = record.get(key)
        if value is not None:
            return value.item() if hasattr(value, "item") else value
    return None


def _any_process(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is set on any process (one all-reduce when distributed)."""
    value = torch.tensor([float(flag)], device=device)
    if _dist.is_distributed():
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def _context(step: int, epoch: float | None, record_ids: Sequence[Any]) -> tuple[str, str]:
    where = f" on process {_dist.rank()}" if _dist.is_distributed() else ""
    when = f", epoch {epoch:.2f}" if epoch is not None else ""
    ids = list(record_ids)
    shown = ", ".join(repr(i) for i in ids[:_SHOWN_IDS]) + (f", ... ({len(ids)} in all)" if len(ids) > _SHOWN_IDS
                                                            else "")
    batch = f" Records of this process's batch (id or dataset row): [{shown}]." if ids else ""
    return f"at training step {step}{when}{where}", batch


def _loss_values(loss: torch.Tensor, pair_losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[loss, pair losses...]`` as one float32 vector on the loss's device (no host synchronisation)."""
    return torch.stack([loss.detach().float().reshape(())] +
                       [pair_losses[n].detach().float().reshape(()).to(loss.device) for n in pair_losses])


def _raise_loss_error(values: torch.Tensor, bad: list[float], names: list[str], pair_losses: dict[str, torch.Tensor],
                      *, step: int, epoch: float | None, record_ids: Sequence[Any]) -> None:
    """``values`` are this process's ``[loss, pairs...]``, ``bad`` the flags reduced over every process."""
    local_bad = (~torch.isfinite(values)).tolist()
    flagged = [n for n, flag in zip(names, bad[1:]) if flag]
    shown = ", ".join(
        f"{n} = {pair_losses[n].item():g}" if local_bad[1 + names.index(n)] else f"{n} (on another process)"
        for n in flagged
    ) or (f"total = {values[0].item():g} (every pair finite: check pair_weights)" if local_bad[0]
          else "the total (on another process)")
    when, batch = _context(step, epoch, record_ids)
    raise NonFiniteLossError(
        f"GCL loss is not finite {when}: {shown}. Training stopped before this update.{batch} {_CAUSES}",
        step=step,
        pairs=flagged,
        record_ids=record_ids,
    )


def check_finite_loss(
    loss: torch.Tensor,
    pair_losses: dict[str, torch.Tensor],
    *,
    step: int,
    epoch: float | None = None,
    record_ids: Sequence[Any] = (),
) -> None:
    """Raise `NonFiniteLossError` when ``loss`` or a pair's loss is NaN/inf on any process (one synchronisation).

    ``step`` is the 1-based optimizer step about to be taken; ``epoch`` and ``record_ids`` (the batch's record ids)
    are added to the message.
    """
    values = _loss_values(loss, pair_losses)
    bad = (~torch.isfinite(values)).float()
    if _dist.is_distributed():
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
    flags = bad.tolist()
    if any(flags):
        _raise_loss_error(values, flags, list(pair_losses), pair_losses, step=step, epoch=epoch,
                          record_ids=record_ids)


def _gradient_flags(named_parameters: Iterable[tuple[str, torch.nn.Parameter]], device: Any
                    ) -> tuple[list[str], list[torch.Tensor], torch.Tensor]:
    """Names, gradients and a not-finite flag per gradient (one multi-tensor norm, no host synchronisation)."""
    names, grads = [], []
    for name, param in named_parameters:
        if param.grad is not None:
            names.append(name)
            grads.append(param.grad)
    if not grads:
        return names, grads, torch.zeros(0, device=device)
    # a tensor's norm is finite iff every entry is: one foreach launch instead of two kernels per parameter
    norms = torch._foreach_norm(grads) if hasattr(torch, "_foreach_norm") else [g.norm() for g in grads]
    return names, grads, (~torch.isfinite(torch.stack([n.float().to(device) for n in norms]))).float()


def _raise_gradient_error(names: list[str], grads: list[torch.Tensor], local_bad: list[float], *, step: int,
                          epoch: float | None, record_ids: Sequence[Any]) -> None:
    # last registered first: a NaN flows from where it entered down to the inputs, so the parameter nearest the
    # output among the flagged ones is usually where it came from
    flagged = [n for n, flag in zip(names, local_bad) if flag][::-1]
    when, batch = _context(step, epoch, record_ids)
    if flagged:
        bad = set(flagged)
        kinds = {n: "nan" if torch.isnan(g).any() else "inf" for n, g in zip(names, grads) if n in bad}
        more = f" and {len(flagged) - _SHOWN_PARAMETERS} more" if len(flagged) > _SHOWN_PARAMETERS else ""
        shown = (f"{len(flagged)} of {len(names)} parameters have a NaN/inf gradient (nearest the output first): "
                 + ", ".join(f"{n} ({kinds[n]})" for n in flagged[:_SHOWN_PARAMETERS]) + more)
    else:
        shown = "a gradient on another process is not finite (this process's gradients are finite)"
    raise NonFiniteGradientError(
        f"gradient is not finite {when}: {shown}; the loss was finite. Training stopped before this update "
        f"(the weights are those after step {step - 1}).{batch} {_CAUSES}",
        step=step,
        parameters=flagged,
        record_ids=record_ids,
    )


def check_finite_gradients(
    named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
    *,
    step: int,
    epoch: float | None = None,
    record_ids: Sequence[Any] = (),
    device: torch.device | str | None = None,
) -> None:
    """Raise `NonFiniteGradientError` when a parameter's gradient is NaN/inf on any process.

    Call it on every process at the same point, after the backward passes of an optimizer step and before the
    step (before gradient clipping, which would spread one NaN to every parameter through the global norm).
    ``device`` is where the flags for the all-reduce live (default: the first gradient's device).
    """
    named_parameters = list(named_parameters)
    if device is None:
        device = next((p.grad.device for _, p in named_parameters if p.grad is not None), torch.device("cpu"))
    names, grads, flags = _gradient_flags(named_parameters, device)
    local = flags.tolist()
    if not _any_process(any(local), torch.device(device)):
        return
    _raise_gradient_error(names, grads, local, step=step, epoch=epoch, record_ids=record_ids)


class NonFiniteGuard(TrainerCallback):
    """The guard inside a `Trainer`: keeps the record ids of the current micro-batch and optimizer step, and runs
    the gradient check once per optimizer step on every process.

    The trainer calls `take_record_ids` on each batch, `check_loss` on each training loss (which only keeps it, on
    the device) and `check_gradients` before it computes the gradient norm (`clip_grad_norm_` multiplies every
    gradient by ``max_norm / norm``, so one NaN would reach every parameter and hide which one it came from);
    ``on_pre_optimizer_step`` checks if nothing did. `check_gradients` looks at the kept losses and the gradients
    together: one host synchronisation and one all-reduce per optimizer step. ``skip_gradients`` is set under fp16's
    loss scaler, whose job is to skip steps whose gradients overflow (the losses are still checked).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.skip_gradients = False
        self.batch_ids: list[Any] = []  # this micro-batch (loss check)
        self.step_ids: list[Any] = []  # every micro-batch of this optimizer step (gradient check)
        self._losses: list[tuple[torch.Tensor, dict[str, torch.Tensor], list[Any]]] = []  # kept until the check
        self._checked = False

    def take_record_ids(self, inputs: dict[str, Any], *, train: bool) -> None:
        """Remove ``record_ids`` from ``inputs`` (the model must not see it), remembering them in training."""
        ids = list(inputs.pop(RECORD_IDS_KEY, None) or [])
        if train:
            self.batch_ids = ids
            self.step_ids.extend(ids)

    def check_loss(self, loss: torch.Tensor, pair_losses: dict[str, torch.Tensor], state: Any) -> None:
        """Keep this micro-batch's losses (detached, on the device) for the check before the update."""
        if self.enabled:
            self._losses.append((_loss_values(loss, pair_losses), dict(pair_losses), list(self.batch_ids)))

    def check_gradients(self, model: torch.nn.Module, state: Any, device: Any = None) -> None:
        """The kept losses, then the gradients, on every process: raise before the update if any is not finite."""
        if self._checked:
            return
        self._checked = True
        losses, self._losses = self._losses, []
        if not self.enabled:
            return
        step = state.global_step + 1
        named = list(model.named_parameters()) if not self.skip_gradients else []
        if device is None:
            device = next((p.grad.device for _, p in named if p.grad is not None), None)
        if device is None:
            device = losses[0][0].device if losses else torch.device("cpu")
        names, grads, grad_flags = _gradient_flags(named, device)
        parts = [(~torch.isfinite(values)).float().to(device) for values, _, _ in losses] + [grad_flags]
        flags = torch.cat(parts) if parts else torch.zeros(0, device=device)
        local = flags.tolist()  # this step's one host synchronisation
        reduced = flags.clone()
        if _dist.is_distributed():
            torch.distributed.all_reduce(reduced, op=torch.distributed.ReduceOp.MAX)
            everywhere = reduced.tolist()
        else:
            everywhere = local
        offset = 0
        for values, pair_losses, ids in losses:
            width = values.numel()
            if any(everywhere[offset:offset + width]):
                _raise_loss_error(values, everywhere[offset:offset + width], list(pair_losses), pair_losses,
                                  step=step, epoch=state.epoch, record_ids=ids)
            offset += width
        if any(everywhere[offset:]):
            _raise_gradient_error(names, grads, local[offset:], step=step, epoch=state.epoch,
                                  record_ids=self.step_ids)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.step_ids, self._losses, self._checked = [], [], False

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if model is not None:
            self.check_gradients(model, state, args.device)
