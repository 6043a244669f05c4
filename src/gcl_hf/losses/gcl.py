"""The Generalized Contrastive Learning loss as a plain tensor function.

Each image–caption pair n gives three L2-normalised embeddings — image `i_n`, text `t_n`, fused `f_n` — and
the loss contrasts modalities with each other inside the mini-batch over a list of directed (anchor, target)
*pairs*. `ALL_PAIRS` (the six directed pairs) is GCL; `CLIP_PAIRS` is CLIP's loss. The settings (pairs, pair
weights, negatives, objective) are parsed by `gcl_hf.losses.settings`, which also says how an unset
`negatives` is resolved: the defaults are the paper's.

Options
- `negatives="all"` (the paper's Eq. 2, the default for GCL's pairs): anchor `a_n` is scored against every
  embedding of the modalities named in `pairs` (for `ALL_PAIRS`: all 3N batch embeddings) except itself, in
  one softmax; each pair (a, b) adds the term `-log softmax(...)[b_n]` per anchor, so with `ALL_PAIRS` the loss
  is `-1/(6N) Σ_n Σ_(a,b) log exp(s·a_n·b_n) / Σ_m Σ_k exp(s·a_n·m_k)` (the anchor's similarity to itself left
  out). With a subset of pairs the candidate set is the union of the modalities those pairs name (e.g. only
  images and fused items for `[("image", "fused")]`) and only the listed (anchor, positive) terms are scored.
- `negatives="modality"` (the per-pair ablation, and CLIP's loss for `CLIP_PAIRS`): six separate InfoNCE
  terms; for a pair (a, b), anchor `a_n` is scored against the N embeddings of modality b only,
  `L_ab = mean_n CE(softmax_k(s·a_n·b_k), n)`. With `CLIP_PAIRS` this is exactly CLIP's loss.
- `objective="sigmoid"` (SigLIP backbones, `negatives="modality"` only): a pair (a, b) costs
  `-(1/N) Σ_n Σ_k log σ(z_nk·(s·a_n·b_k + bias))`, z = +1 on the diagonal, −1 elsewhere, exactly
  SiglipModel's loss (`pairs=[("text", "image")]`; the value is symmetric in a, b). The "all in one softmax"
  construction has no sigmoid counterpart, so `negatives="all"` with the sigmoid objective is rejected.
- The total is `Σ_p w_p·L_p / Σ_p w_p` (weights default to 1). `logit_bias` is used by the sigmoid objective
  only (a constant added to every softmax logit cancels exactly).

Efficiency: each N×N similarity block is computed once. On one process the pairs (a, b) and (b, a) share one
matrix (its transpose), so `ALL_PAIRS` with modality negatives costs three matmuls; `negatives="all"` costs one
(3N × 3N) matmul and one log-sum-exp per row. Half-precision logits are upcast to float32 before the
softmax/sigmoid.

Multiple processes (`group`, default the global process group, has R > 1 processes): the *candidates* are
gathered from every process with gradient (`gcl_hf.losses.distributed.gather_with_grad`, one collective per
call), the *anchors* stay local, and the targets of local item i are at `rank × N_local + i` among the gathered
candidates. The sigmoid objective then uses every gathered candidate as a negative (the all-gather form of
SigLIP's chunked loss; same value). Every process must have the same local batch size (a `ValueError`
otherwise).

- Loss: each process returns the mean over *its* anchors, so the mean of the R losses equals the one-process
  loss on the concatenated batch.
- Gradients: the gather's backward sums, over processes, the gradients reaching each local embedding, so each
  process's embeddings receive `R ×` the one-process gradient of that embedding; DDP then *averages* parameter
  gradients over processes, which divides by R: the parameter gradients equal those of one process on the
  concatenated batch. A parameter used on every process outside the gather (the `logit_scale`) gets `∂L_r/∂s`
  on process r, and DDP's average of those is again the one-process gradient.

Gradient accumulation: negatives come from one micro-batch only (on every process, gathered across
processes). Accumulating K micro-batches averages K contrastive losses of the micro-batch size; it does *not*
give the loss of a K× larger contrastive batch (fewer negatives, a different value and gradient). To enlarge
the contrastive batch beyond memory, use the gradient cache (`gradient_cache_chunk_size`), which computes this
loss on the whole batch exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from gcl_hf.losses import distributed as _dist
from gcl_hf.losses.settings import (ALL_PAIRS, CLIP_PAIRS, MODALITY_NAMES, NEGATIVES, OBJECTIVES, LossSettings, Pair,
                                    PairsLike, pair_name, parse_pairs)

__all__ = [
    "ALL_PAIRS",
    "CLIP_PAIRS",
    "MODALITY_NAMES",
    "NEGATIVES",
    "OBJECTIVES",
    "gcl_loss",
    "gcl_loss_from_settings",
    "pair_name",
    "parse_pairs",
]

def _check_embeds(given: dict[str, torch.Tensor | None], pairs: tuple[Pair, ...]) -> dict[str, torch.Tensor]:
    used = [m for m in MODALITY_NAMES if any(m in p for p in pairs)]
    out: dict[str, torch.Tensor] = {}
    ref_name = None
    for m in used:
        t = given[m]
        if t is None:
            needing = ", ".join(pair_name(p) for p in pairs if m in p)
            raise ValueError(f"{m}_embeds is None but pair(s) {needing} use it")
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{m}_embeds must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 2:
            raise ValueError(f"{m}_embeds must have shape [N, D], got {list(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{m}_embeds must be floating point, got {t.dtype}")
        if t.shape[0] == 0:
            raise ValueError(f"{m}_embeds is an empty batch (N = 0); the contrastive loss needs N >= 1")
        if ref_name is not None:
            ref = out[ref_name]
            if t.shape != ref.shape:
                raise ValueError(f"{m}_embeds has shape {list(t.shape)} but {ref_name}_embeds has {list(ref.shape)}")
            if t.device != ref.device:
                raise ValueError(f"{m}_embeds is on {t.device} but {ref_name}_embeds is on {ref.device}")
            if t.dtype != ref.dtype:
                raise ValueError(f"{m}_embeds has dtype {t.dtype} but {ref_name}_embeds has {ref.dtype}")
        else:
            ref_name = m
        out[m] = t
    return out


def _as_scalar(value: float | torch.Tensor, name: str, device: torch.device) -> float | torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a float or a one-element tensor, got shape {list(value.shape)}")
        return value.reshape(()).to(device)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a float or a one-element tensor, got {type(value).__name__}")
    return float(value)


class _Gram(torch.autograd.Function):
    """`x @ x.T` whose backward is one matmul, `(g + g.T) @ x`, instead of autograd's two."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x @ x.T

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return (grad + grad.T) @ x


def _logits(anchors: torch.Tensor, candidates: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    sim = _Gram.apply(anchors) if anchors is candidates else anchors @ candidates.T
    if sim.dtype in (torch.float16, torch.bfloat16):
        sim = sim.float()
    return sim * scale


def _softmax_modality(emb, cand, pairs, scale, labels, shared: bool) -> list[torch.Tensor]:
    blocks: dict[Pair, torch.Tensor] = {}
    losses = []
    for a, b in pairs:
        if shared and (b, a) in blocks:
            logits = blocks[(b, a)].T
        else:
            logits = blocks[(a, b)] = _logits(emb[a], cand[b], scale)
        losses.append(F.cross_entropy(logits, labels))
    return losses


def _sigmoid_modality(emb, cand, pairs, scale, bias, labels, shared: bool) -> list[torch.Tensor]:
    n, n_cand = labels.shape[0], cand[pairs[0][1]].shape[0]
    signs = None
    done: dict[Pair, torch.Tensor] = {}
    losses = []
    for a, b in pairs:
        if shared and (b, a) in done:  # Σ over the N×N grid is the same for the transpose
            losses.append(done[(b, a)])
            continue
        logits = _logits(emb[a], cand[b], scale)
        if bias is not None:
            logits = logits + bias
        if signs is None:
            signs = torch.full((n, n_cand), -1.0, dtype=logits.dtype, device=logits.device)
            signs[torch.arange(n, device=labels.device), labels] = 1.0
        done[(a, b)] = -F.logsigmoid(signs * logits).sum() / n
        losses.append(done[(a, b)])
    return losses


def _softmax_all(emb, cand, pairs, scale, offset: int, shared: bool) -> list[torch.Tensor]:
    involved = [m for m in MODALITY_NAMES if any(m in p for p in pairs)]
    anchor_mods = [m for m in involved if any(p[0] == m for p in pairs)]
    n = emb[involved[0]].shape[0]
    n_cand = cand[involved[0]].shape[0]
    cand_pos = {m: j for j, m in enumerate(involved)}
    anchor_pos = {m: j for j, m in enumerate(anchor_mods)}
    all_cand = torch.cat([cand[m] for m in involved], dim=0)
    if shared and anchor_mods == involved:
        all_anchor = all_cand
    else:
        all_anchor = torch.cat([emb[m] for m in anchor_mods], dim=0)
    logits = _logits(all_anchor, all_cand, scale)  # [A·n, M·n_cand]
    device = logits.device
    local = torch.arange(n, device=device)
    rows = torch.arange(len(anchor_mods) * n, device=device)
    self_cols = torch.cat([cand_pos[m] * n_cand + offset + local for m in anchor_mods])
    mask = torch.zeros(logits.shape, dtype=torch.bool, device=device)
    mask[rows, self_cols] = True
    logits = logits.masked_fill(mask, float("-inf"))
    lse = torch.logsumexp(logits, dim=1)
    # one gather for every (anchor, positive) term of every pair: a single index backward
    r = torch.cat([anchor_pos[a] * n + local for a, _ in pairs])
    c = torch.cat([cand_pos[b] * n_cand + offset + local for _, b in pairs])
    terms = (lse[r] - logits[r, c]).view(len(pairs), n)
    return list(terms.mean(dim=1).unbind())


def gcl_loss(
    image_embeds: torch.Tensor | None,
    text_embeds: torch.Tensor | None,
    fused_embeds: torch.Tensor | None,
    logit_scale: float | torch.Tensor,
    *,
    pairs: PairsLike = ALL_PAIRS,
    pair_weights: Sequence[float] | Mapping[str, float] | None = None,
    negatives: str | None = None,
    objective: str = "softmax",
    logit_bias: float | torch.Tensor | None = None,
    return_pair_losses: bool = False,
    group: dist.ProcessGroup | None = None,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The GCL loss over directed modality pairs (see the module docstring for the maths).

    Reference: Lee et al., "Generalized Contrastive Learning for Universal Multimodal Retrieval", NeurIPS 2025
    (arXiv 2509.25638), Eq. 2.

    Args:
        image_embeds, text_embeds, fused_embeds: L2-normalised `[N, D]` tensors, same shape, device and dtype;
            any may be `None` if no pair uses it. Row n of each is item n.
        logit_scale: the multiplier (CLIP's `logit_scale.exp()`), a float or one-element tensor (the gradient
            flows into it).
        pairs: (anchor, target) modality pairs, or a string for `parse_pairs` ("all", "clip",
            "image->text,text->image").
        pair_weights: one non-negative weight per pair, or a mapping "image->text" → weight (pairs it omits weigh
            1); the total is `Σ w_p L_p / Σ w_p`.
        negatives: "all" (one softmax over every embedding of the pairs' modalities except the anchor: Eq. 2),
            "modality" (a separate InfoNCE per pair over the target modality), or `None`: "all" when a pair
            involves the fused modality and the objective is softmax, else "modality" (so `CLIP_PAIRS` alone is
            CLIP's loss).
        objective: "softmax" (InfoNCE / CLIP) or "sigmoid" (SigLIP; modality negatives only).
        logit_bias: SigLIP's bias (sigmoid objective; ignored by softmax where it cancels).
        return_pair_losses: also return `{"image->text": detached loss, ...}`.
        group: the process group whose members contribute negatives (default: the global group when
            `torch.distributed` is initialised; a single process otherwise).

    Returns:
        The scalar loss (float32 for half-precision inputs), or `(loss, pair_losses)`. With several processes
        it is this process's local mean (see the module docstring).

    Example:
        >>> import torch, torch.nn.functional as F
        >>> from gcl_hf import gcl_loss
        >>> i, t = F.normalize(torch.randn(4, 8), dim=-1), F.normalize(torch.randn(4, 8), dim=-1)
        >>> loss = gcl_loss(i, t, F.normalize(i + t, dim=-1), logit_scale=100.0)  # the paper's Eq. 2
    """
    settings = LossSettings.parse(pairs, pair_weights, negatives, objective)
    return gcl_loss_from_settings(settings, image_embeds, text_embeds, fused_embeds, logit_scale,
                                  logit_bias=logit_bias, return_pair_losses=return_pair_losses, group=group)


def gcl_loss_from_settings(
    settings: LossSettings,
    image_embeds: torch.Tensor | None,
    text_embeds: torch.Tensor | None,
    fused_embeds: torch.Tensor | None,
    logit_scale: float | torch.Tensor,
    *,
    logit_bias: float | torch.Tensor | None = None,
    return_pair_losses: bool = False,
    group: dist.ProcessGroup | None = None,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`gcl_loss` with settings already parsed (what `GCLModel` calls on every step)."""
    pairs_t, negatives, objective = settings.pairs, settings.negatives, settings.objective
    weights = list(settings.weights)
    emb = _check_embeds({"image": image_embeds, "text": text_embeds, "fused": fused_embeds}, pairs_t)
    first = next(iter(emb.values()))
    device, n = first.device, first.shape[0]
    scale = _as_scalar(logit_scale, "logit_scale", device)
    bias = None
    if objective == "sigmoid" and logit_bias is not None:
        bias = _as_scalar(logit_bias, "logit_bias", device)

    distributed = _dist.is_distributed(group)
    offset = _dist.rank(group) * n if distributed else 0
    if negatives == "all":
        cand_mods = [m for m in MODALITY_NAMES if m in emb]
    else:
        cand_mods = [m for m in MODALITY_NAMES if any(p[1] == m for p in pairs_t)]
    if distributed:  # one collective for every candidate modality: [n, M·D] → [R·n, M·D]
        gathered = _dist.gather_with_grad(torch.cat([emb[m] for m in cand_mods], dim=1), group)
        cand = dict(zip(cand_mods, gathered.split(first.shape[1], dim=1)))
    else:
        cand = emb
    labels = offset + torch.arange(n, device=device)

    if objective == "sigmoid":
        losses = _sigmoid_modality(emb, cand, pairs_t, scale, bias, labels, shared=not distributed)
    elif negatives == "modality":
        losses = _softmax_modality(emb, cand, pairs_t, scale, labels, shared=not distributed)
    else:
        losses = _softmax_all(emb, cand, pairs_t, scale, offset, shared=not distributed)

    total_w = sum(weights)
    total = losses[0] * (weights[0] / total_w)
    for loss, w in zip(losses[1:], weights[1:]):
        total = total + loss * (w / total_w)
    if return_pair_losses:
        return total, {pair_name(p): loss.detach() for p, loss in zip(pairs_t, losses)}
    return total
