"""The Generalized Contrastive Learning loss (SPEC §2).

Each image–caption pair n gives three L2-normalised embeddings — image `i_n`, text `t_n`,
fused `f_n` — and the loss contrasts modalities with each other inside the mini-batch over a
list of directed (anchor, target) *pairs*; `ALL_PAIRS` (the six directed pairs) is GCL and
`CLIP_PAIRS` is CLIP's loss.

Options
- `negatives="modality"` (GCL): for a pair (a, b), anchor `a_n` is scored against the N
  embeddings of modality b; `L_ab = mean_n CE(softmax_k(scale·a_n·b_k), n)`.
- `negatives="all"`: anchor `a_n` is scored against every embedding of the modalities named in
  `pairs` (for `ALL_PAIRS`: all 3N batch embeddings) except itself; each pair (a, b) adds the
  term `-log softmax(...)[b_n]` per anchor, so with `ALL_PAIRS` the loss is the mean of 6N
  (anchor, positive) terms. With a subset of pairs the candidate set is the union of the
  modalities those pairs name (e.g. `CLIP_PAIRS` → images and texts, 2N − 1 candidates) and
  only the listed (anchor, positive) terms are scored.
- `objective="sigmoid"` (SigLIP backbones, `negatives="modality"` only): a pair (a, b) costs
  `-(1/N) Σ_n Σ_k log σ(z_nk·(scale·a_n·b_k + bias))`, z = +1 on the diagonal, −1 elsewhere,
  exactly SiglipModel's loss (`pairs=[("text", "image")]`; the value is symmetric in a, b).
  `negatives="all"` with the sigmoid objective is rejected: the "other views as positives
  in one softmax" construction has no sigmoid counterpart.
- The total is `Σ_p w_p·L_p / Σ_p w_p` (weights default to 1). `logit_bias` is used by the
  sigmoid objective only (a constant added to every softmax logit cancels exactly).

Efficiency: each N×N similarity block is computed once. On one process the pairs (a, b) and
(b, a) share one matrix (its transpose), so `ALL_PAIRS` costs three matmuls; `negatives="all"`
costs one (3N × 3N) matmul and one log-sum-exp per row. Half-precision logits are upcast to
float32 before the softmax/sigmoid.

Multiple processes (`torch.distributed` initialised, world size R > 1): the *candidates* are
gathered from every process with gradient (`gcl_hf.losses.distributed.gather_with_grad`, one
collective per call), the *anchors* stay local, and the targets of local item i are at
`rank × N_local + i` among the gathered candidates. The sigmoid objective then uses every
gathered candidate as a negative (the all-gather form of SigLIP's chunked loss; same value).
Every process must have the same local batch size (a `ValueError` otherwise).

- Loss: each process returns the mean over *its* anchors, so the mean of the R losses equals
  the one-process loss on the concatenated batch.
- Gradients: the gather's backward sums, over processes, the gradients reaching each local
  embedding, so each process's embeddings receive `R ×` the one-process gradient of that
  embedding; DDP then *averages* parameter gradients over processes, which divides by R: the
  parameter gradients equal those of one process on the concatenated batch. A parameter used
  on every process outside the gather (the `logit_scale`) gets `∂L_r/∂s` on process r, and
  DDP's average of those is again the one-process gradient. (Asserted by
  `tests/test_loss_distributed.py` with two real processes.)

Gradient accumulation: negatives come from one micro-batch only (on every process, gathered
across processes). Accumulating K micro-batches averages K contrastive losses of the
micro-batch size; it does *not* give the loss of a K× larger contrastive batch (fewer
negatives, a different value and gradient). To enlarge the contrastive batch beyond memory,
use the gradient cache (`gradient_cache_chunk_size`), which computes this loss on the whole
batch exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Union

import torch
import torch.nn.functional as F

from gcl_hf.losses import distributed as _dist

__all__ = [
    "MODALITY_NAMES",
    "ALL_PAIRS",
    "CLIP_PAIRS",
    "NEGATIVES",
    "OBJECTIVES",
    "Pair",
    "pair_name",
    "parse_pairs",
    "gcl_loss",
]

Pair = tuple[str, str]
PairsLike = Union[str, Sequence[Union[str, Sequence[str]]]]

MODALITY_NAMES: tuple[str, str, str] = ("image", "text", "fused")
ALL_PAIRS: tuple[Pair, ...] = (
    ("image", "text"),
    ("text", "image"),
    ("image", "fused"),
    ("fused", "image"),
    ("text", "fused"),
    ("fused", "text"),
)
CLIP_PAIRS: tuple[Pair, ...] = (("image", "text"), ("text", "image"))
NEGATIVES: tuple[str, ...] = ("modality", "all")
OBJECTIVES: tuple[str, ...] = ("softmax", "sigmoid")

_ALIASES = {"image": "image", "img": "image", "i": "image",
            "text": "text", "txt": "text", "t": "text",
            "fused": "fused", "f": "fused"}
_PRESETS = {"all": ALL_PAIRS, "gcl": ALL_PAIRS, "clip": CLIP_PAIRS}
_SEPARATORS = ("->", ":", "-")


def pair_name(pair: Pair) -> str:
    """`("image", "text")` → `"image->text"` (the key of per-pair losses in logs)."""
    return f"{pair[0]}->{pair[1]}"


def _modality(name: object, where: str) -> str:
    key = str(name).strip().lower() if isinstance(name, str) else None
    if key not in _ALIASES:
        raise ValueError(f"unknown modality {name!r} in {where}; expected one of {MODALITY_NAMES}")
    return _ALIASES[key]


def _parse_pair_string(item: str, where: str) -> Pair:
    for sep in _SEPARATORS:
        if sep in item:
            parts = item.split(sep)
            if len(parts) != 2:
                break
            return _modality(parts[0], where), _modality(parts[1], where)
    raise ValueError(
        f"cannot read pair {item!r} in {where}; write it as 'anchor->target' (or 'anchor-target'), "
        f"e.g. 'image->text'"
    )


def parse_pairs(spec: PairsLike) -> tuple[Pair, ...]:
    """Normalise a pair specification into a tuple of (anchor, target) modality names.

    Accepts `"all"` (or `"gcl"`) → `ALL_PAIRS`, `"clip"` → `CLIP_PAIRS`, a comma-separated
    string such as `"image-text,text->image"` (aliases `i`/`img`, `t`/`txt`, `f`), or a
    sequence whose items are `("image", "text")` tuples or `"image->text"` strings.
    Raises `ValueError` for unknown names, a pair with the same modality twice, a duplicate
    pair, or an empty list.
    """
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text in _PRESETS:
            return _PRESETS[text]
        items: list = [s for s in (p.strip() for p in text.split(",")) if s]
        if not items:
            raise ValueError(f"empty pair specification {spec!r}")
    elif isinstance(spec, Sequence):
        items = list(spec)
        if len(items) == 2 and all(isinstance(x, str) and x.strip().lower() in _ALIASES for x in items):
            items = [tuple(items)]  # a single bare pair such as ("image", "text")
    else:
        raise ValueError(f"pairs must be a string or a sequence of pairs, got {type(spec).__name__}")
    if not items:
        raise ValueError("pairs is empty: give at least one (anchor, target) pair")
    out: list[Pair] = []
    for idx, item in enumerate(items):
        where = f"pairs[{idx}]"
        if isinstance(item, str):
            pair = _parse_pair_string(item, where)
        elif isinstance(item, Sequence) and len(item) == 2:
            pair = (_modality(item[0], where), _modality(item[1], where))
        else:
            raise ValueError(f"{where} = {item!r} is not a pair; expected ('image', 'text') or 'image->text'")
        if pair[0] == pair[1]:
            raise ValueError(f"{where} = {item!r} contrasts {pair[0]!r} with itself; a pair needs two modalities")
        if pair in out:
            raise ValueError(f"{where} = {item!r} repeats pair {pair_name(pair)}; use pair_weights to weight it")
        out.append(pair)
    return tuple(out)


def _check_weights(pair_weights: Sequence[float] | Mapping[str, float] | None, pairs: tuple[Pair, ...]) -> list[float]:
    if pair_weights is None:
        return [1.0] * len(pairs)
    if isinstance(pair_weights, Mapping):
        names = {pair_name(p) for p in pairs}
        unknown = [k for k in pair_weights if k not in names]
        if unknown:
            raise ValueError(f"pair_weights names pairs not in pairs: {unknown}; pairs are {sorted(names)}")
        weights = [pair_weights.get(pair_name(p), 1.0) for p in pairs]
    else:
        weights = list(pair_weights)
        if len(weights) != len(pairs):
            raise ValueError(
                f"pair_weights has {len(weights)} entries but pairs has {len(pairs)} "
                f"({', '.join(pair_name(p) for p in pairs)})"
            )
    try:
        weights = [float(w) for w in weights]
    except (TypeError, ValueError) as err:
        raise ValueError(f"pair_weights must be numbers, got {pair_weights!r}") from err
    for p, w in zip(pairs, weights):
        if not w >= 0.0 or w == float("inf"):  # also catches NaN
            raise ValueError(f"pair weight for {pair_name(p)} must be finite and >= 0, got {w}")
    if sum(weights) <= 0.0:
        raise ValueError(f"pair_weights sum to zero ({weights}); at least one pair needs a positive weight")
    return weights


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
    negatives: str = "modality",
    objective: str = "softmax",
    logit_bias: float | torch.Tensor | None = None,
    return_pair_losses: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The GCL loss over directed modality pairs (see the module docstring for the maths).

    Args:
        image_embeds, text_embeds, fused_embeds: L2-normalised `[N, D]` tensors, same shape,
            device and dtype; any may be `None` if no pair uses it. Row n of each is item n.
        logit_scale: the multiplier (CLIP's `logit_scale.exp()`), a float or one-element
            tensor (the gradient flows into it).
        pairs: (anchor, target) modality pairs, or a string for `parse_pairs` ("all", "clip",
            "image->text,text->image").
        pair_weights: one non-negative weight per pair, or a mapping "image->text" → weight
            (pairs it omits weigh 1); the total is `Σ w_p L_p / Σ w_p`.
        negatives: "modality" (candidates = the target modality's N embeddings) or "all"
            (candidates = every embedding of the modalities in `pairs` except the anchor).
        objective: "softmax" (InfoNCE / CLIP) or "sigmoid" (SigLIP; modality negatives only).
        logit_bias: SigLIP's bias (sigmoid objective; ignored by softmax where it cancels).
        return_pair_losses: also return `{"image->text": detached loss, ...}`.

    Returns:
        The scalar loss (float32 for half-precision inputs), or `(loss, pair_losses)`.
        Under `torch.distributed` it is this process's local mean (see module docstring).
    """
    pairs_t = parse_pairs(pairs)
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if objective == "sigmoid" and negatives == "all":
        raise ValueError('objective="sigmoid" supports negatives="modality" only (negatives="all" is softmax-only)')
    weights = _check_weights(pair_weights, pairs_t)
    emb = _check_embeds({"image": image_embeds, "text": text_embeds, "fused": fused_embeds}, pairs_t)
    first = next(iter(emb.values()))
    device, n = first.device, first.shape[0]
    scale = _as_scalar(logit_scale, "logit_scale", device)
    bias = None
    if objective == "sigmoid" and logit_bias is not None:
        bias = _as_scalar(logit_bias, "logit_bias", device)

    distributed = _dist.is_distributed()
    offset = _dist.rank() * n if distributed else 0
    if negatives == "all":
        cand_mods = [m for m in MODALITY_NAMES if m in emb]
    else:
        cand_mods = [m for m in MODALITY_NAMES if any(p[1] == m for p in pairs_t)]
    if distributed:  # one collective for every candidate modality: [n, M·D] → [R·n, M·D]
        gathered = _dist.gather_with_grad(torch.cat([emb[m] for m in cand_mods], dim=1))
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
