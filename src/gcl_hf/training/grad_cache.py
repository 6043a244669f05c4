"""Gradient cache (GradCache, Gao et al. 2021): a contrastive batch larger than memory, same gradient.

In-batch negatives couple every pair of a batch, so the batch cannot be split like an ordinary loss.
`cached_gradient_step` splits the *encoder* work instead:

1. embed each chunk of the batch without autograd, recording the RNG state before each chunk;
2. compute the GCL loss on all embeddings and its gradient with respect to the embeddings (and the
   temperature / bias), a cheap ``N × D`` cache;
3. re-embed each chunk with autograd, replaying its RNG state (so dropout draws the masks of step 1) and
   backpropagate ``<embeddings, cached gradient>``, which gives the chunk's share of the parameter gradient.

Memory is that of one chunk plus the embeddings and the loss's ``N × N`` blocks; time is about one extra
forward pass. The gradient equals the one-pass gradient to float tolerance (asserted in tests).

Under DDP each non-final chunk is re-embedded inside ``model.no_sync()`` and the gradients are all-reduced once,
in the final chunk's backward; the temperature's cached gradient joins that final backward (through the
model's returned multiplier) so that every trainable parameter takes part in the synchronised pass. Negatives
are gathered across processes by the loss in step 2 exactly as without the cache.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import get_device_states, set_device_states

from gcl_hf.losses.settings import MODALITY_NAMES

__all__ = ["GradCacheOutput", "RngState", "cached_gradient_step", "split_batch"]



class RngState:
    """The CPU (and accelerator) random state at construction; ``replay()`` runs a block from that state and
    then puts the surrounding state back, so replaying does not shift later random draws."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.cpu_state = torch.get_rng_state()
        self.devices, self.device_states = get_device_states(*tensors)

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=self.devices, enabled=True):
            torch.set_rng_state(self.cpu_state)
            set_device_states(self.devices, self.device_states)
            yield


@dataclass
class GradCacheOutput:
    """The (detached, unscaled) loss of the whole batch and its per-pair parts."""

    loss: torch.Tensor
    pair_losses: dict[str, torch.Tensor]


def split_batch(inputs: Mapping[str, Any], chunk_size: int) -> list[dict[str, Any]]:
    """Split a collated batch along dim 0 into chunks of ``chunk_size`` rows (tensors with the batch's first
    dimension are sliced, everything else is passed to every chunk)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    sizes = {v.shape[0] for v in inputs.values() if isinstance(v, torch.Tensor) and v.ndim > 0}
    if len(sizes) != 1:
        shapes = {k: tuple(v.shape) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        raise ValueError(f"cannot split a batch whose tensors disagree on the batch size: {shapes}")
    n = sizes.pop()
    return [
        {k: (v[start:start + chunk_size] if isinstance(v, torch.Tensor) and v.ndim > 0 else v)
         for k, v in inputs.items()}
        for start in range(0, n, chunk_size)
    ]


def _embeds(output: Any) -> dict[str, torch.Tensor | None]:
    return {m: getattr(output, f"{m}_embeds", None) for m in MODALITY_NAMES}


def cached_gradient_step(
    model: nn.Module,
    inputs: Mapping[str, Any],
    chunk_size: int,
    *,
    gcl_model: nn.Module | None = None,
    loss_scale: float = 1.0,
    backward: Callable[[torch.Tensor], None] | None = None,
    no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
    check_loss: Callable[[torch.Tensor, dict[str, torch.Tensor]], None] | None = None,
) -> GradCacheOutput:
    """Accumulate into ``.grad`` the gradient of ``loss_scale ×`` the GCL loss of the whole batch, chunk by chunk.

    Args:
        model: called as ``model(**chunk)``; returns a `GCLOutput` (a `GCLModel`, possibly wrapped by DDP).
        inputs: the collated batch (``pixel_values``, ``input_ids``, ``attention_mask``, ...).
        chunk_size: rows per encoder pass.
        gcl_model: the unwrapped `GCLModel` holding the loss settings and the temperature (default: ``model``).
        loss_scale: multiplies the loss before differentiation (e.g. ``1 / gradient_accumulation_steps``).
        backward: runs the backward pass of each chunk's surrogate (e.g. ``accelerator.backward`` so that a
            mixed-precision grad scaler applies); default ``Tensor.backward``.
        no_sync: a context manager factory used around every chunk but the last (e.g. DDP's ``model.no_sync``)
            so that gradients are all-reduced once per batch.
        check_loss: called with the loss and per-pair losses before any backward (the NaN guard).
    """
    gcl_model = model if gcl_model is None else gcl_model
    backward = backward or torch.Tensor.backward
    chunks = split_batch(inputs, chunk_size)

    # 1. embed without a graph, remembering each chunk's RNG state
    states: list[RngState] = []
    cached: dict[str, list[torch.Tensor]] = {m: [] for m in MODALITY_NAMES}
    with torch.no_grad():
        for chunk in chunks:
            states.append(RngState(*[v for v in chunk.values() if isinstance(v, torch.Tensor)]))
            for m, emb in _embeds(model(**chunk)).items():
                if emb is not None:
                    cached[m].append(emb)

    # 2. loss on the full batch; gradient with respect to the embeddings and the temperature
    leaves: dict[str, torch.Tensor | None] = {
        m: (torch.cat(cached[m]).detach().requires_grad_() if cached[m] else None) for m in MODALITY_NAMES
    }
    scale_param = gcl_model.log_logit_scale_param
    scale = gcl_model.logit_scale().detach().requires_grad_(scale_param.requires_grad)
    bias_param = gcl_model.logit_bias_param if gcl_model.config.objective == "sigmoid" else None
    bias = bias_param.detach().requires_grad_(bias_param.requires_grad) if bias_param is not None else None
    with torch.enable_grad():
        loss, pair_losses = gcl_model.loss_from_embeddings(leaves["image"], leaves["text"], leaves["fused"],
                                                           logit_scale=scale, logit_bias=bias)
    if check_loss is not None:
        check_loss(loss, pair_losses)
    wrt = {m: t for m, t in leaves.items() if t is not None}
    if scale.requires_grad:
        wrt["logit_scale"] = scale
    if bias is not None and bias.requires_grad:
        wrt["logit_bias"] = bias
    names = list(wrt)
    grads = torch.autograd.grad(loss * loss_scale, [wrt[k] for k in names], allow_unused=True)
    cache = dict(zip(names, grads))
    del leaves, wrt, cached

    # 3. re-embed each chunk with a graph and backpropagate the cached gradients
    start = 0
    for i, (chunk, state) in enumerate(zip(chunks, states)):
        last = i == len(chunks) - 1
        context = no_sync() if (no_sync is not None and not last) else contextlib.nullcontext()
        with context, state.replay():
            output = model(**chunk)
            embeds = _embeds(output)
            rows = next(e.shape[0] for e in embeds.values() if e is not None)
            surrogate = None
            for m, emb in embeds.items():
                grad = cache.get(m)
                if emb is None or grad is None:
                    continue
                term = (emb * grad[start:start + rows].to(emb.dtype)).sum()
                surrogate = term if surrogate is None else surrogate + term
            if last:  # the temperature joins the synchronised backward
                if cache.get("logit_scale") is not None:
                    surrogate = surrogate + (output.logit_scale.reshape(()) * cache["logit_scale"]).sum()
                if cache.get("logit_bias") is not None:
                    model_bias = getattr(output, "logit_bias", None)
                    if model_bias is None:
                        model_bias = gcl_model.logit_bias_param
                    surrogate = surrogate + (model_bias.reshape(()) * cache["logit_bias"]).sum()
            if surrogate is not None:
                backward(surrogate)
        start += rows
    return GradCacheOutput(loss=loss.detach(), pair_losses=pair_losses)
