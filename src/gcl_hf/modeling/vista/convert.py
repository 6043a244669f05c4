"""Convert a released VISTA checkpoint (FlagEmbedding's ``Visualized_base_en_v1.5.pth`` / ``Visualized_m3.pth``)
into a `VistaModel` directory: safetensors weights, config, BGE tokenizer and VISTA image processor.

The ``.pth`` is one flat ``state_dict``, read with ``torch.load(weights_only=True)`` (no code runs): the BGE text
encoder (``bge_embeddings.*``, ``bge_encoder.*``, ``bge_pooler.*``), the EVA02-CLIP tower
(``model_visual.visual.*``, with its RoPE tables saved once per block) and ``visual_proj.*``. Sizes come from
the tensors' shapes (the text encoder's head count and other non-shape settings from ``text_model``'s config);
the image-only prompt is the text model's tokenizer's encoding of ``""``. Unknown and missing keys are refused by
name; the keys VISTA never uses (the BGE pooler, the ViT's final norm and head, ``logit_scale``, the RoPE copies,
after checking they match the tables the model computes) are reported as unused. The source dtype is kept.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gcl_hf.modeling.vista.configuration_vista import Eva02VisionConfig, VistaConfig

__all__ = ["VistaConversion", "VistaConversionError", "convert_vista", "convert_vista_state_dict",
           "infer_vision_config"]

_VISUAL = "model_visual.visual."
#: reference block sub-key → ours (under ``vision_model.layers.N.``)
_BLOCK_KEYS = {
    "norm1.weight": "layer_norm1.weight", "norm1.bias": "layer_norm1.bias",
    "norm2.weight": "layer_norm2.weight", "norm2.bias": "layer_norm2.bias",
    "attn.q_proj.weight": "attn.q_proj.weight", "attn.q_bias": "attn.q_proj.bias",
    "attn.k_proj.weight": "attn.k_proj.weight",
    "attn.v_proj.weight": "attn.v_proj.weight", "attn.v_bias": "attn.v_proj.bias",
    "attn.inner_attn_ln.weight": "attn.inner_norm.weight", "attn.inner_attn_ln.bias": "attn.inner_norm.bias",
    "attn.proj.weight": "attn.out_proj.weight", "attn.proj.bias": "attn.out_proj.bias",
    "mlp.w1.weight": "mlp.gate_proj.weight", "mlp.w1.bias": "mlp.gate_proj.bias",
    "mlp.w2.weight": "mlp.up_proj.weight", "mlp.w2.bias": "mlp.up_proj.bias",
    "mlp.ffn_ln.weight": "mlp.ffn_norm.weight", "mlp.ffn_ln.bias": "mlp.ffn_norm.bias",
    "mlp.w3.weight": "mlp.down_proj.weight", "mlp.w3.bias": "mlp.down_proj.bias",
}
_VISION_KEYS = {
    "patch_embed.proj.weight": "vision_model.patch_embedding.weight",
    "patch_embed.proj.bias": "vision_model.patch_embedding.bias",
    "cls_token": "vision_model.class_embedding",
    "pos_embed": "vision_model.position_embedding",
}
_UNUSED_VISION = ("norm.weight", "norm.bias", "head.weight", "head.bias", "rope.freqs_cos", "rope.freqs_sin")
_UNUSED = ("model_visual.logit_scale", "bge_embeddings.position_ids", "bge_embeddings.token_type_ids")
_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")


class VistaConversionError(ValueError):
    """The checkpoint is not in VISTA's layout (a key or a shape is named)."""


@dataclass
class VistaConversion:
    """What `convert_vista` wrote: the directory, the config, the source dtype and the unused source keys."""

    output: Path
    config: VistaConfig
    dtype: torch.dtype
    unused_keys: list[str] = field(default_factory=list)


def _rope_key(sub: str) -> bool:
    return sub in ("attn.rope.freqs_cos", "attn.rope.freqs_sin")


def infer_vision_config(state_dict: dict[str, torch.Tensor], **overrides: Any) -> Eva02VisionConfig:
    """The EVA02 tower's sizes from the shapes of ``model_visual.visual.*``."""
    def get(key: str) -> torch.Tensor:
        if _VISUAL + key not in state_dict:
            raise VistaConversionError(f"missing key {_VISUAL + key!r}: not a VISTA (EVA02-CLIP) checkpoint")
        return state_dict[_VISUAL + key]

    patch = get("patch_embed.proj.weight")  # [width, channels, p, p]
    width, channels, patch_size = patch.shape[0], patch.shape[1], patch.shape[-1]
    tokens = get("pos_embed").shape[1] - 1
    grid = int(round(tokens**0.5))
    if grid * grid != tokens:
        raise VistaConversionError(f"{_VISUAL}pos_embed: {tokens} patch positions are not a square grid")
    depth = 1 + max((int(m.group(1)) for k in state_dict if (m := _BLOCK.match(k[len(_VISUAL):]))
                     and k.startswith(_VISUAL)), default=-1)
    if depth == 0:
        raise VistaConversionError(f"no {_VISUAL}blocks.N.* keys: not a VISTA (EVA02-CLIP) checkpoint")
    rope = state_dict.get(_VISUAL + "rope.freqs_cos")
    head_dim = rope.shape[-1] if rope is not None else 64  # EVA02-CLIP's head width
    if width % head_dim:
        raise VistaConversionError(f"{_VISUAL}rope.freqs_cos: head size {head_dim} does not divide width {width}")
    values = dict(hidden_size=width, intermediate_size=get("blocks.0.mlp.w1.weight").shape[0],
                  num_hidden_layers=depth, num_attention_heads=width // head_dim, image_size=grid * patch_size,
                  patch_size=patch_size, num_channels=channels)
    return Eva02VisionConfig(**{**values, **overrides})


def _check_rope(state_dict: dict[str, torch.Tensor], vision: Eva02VisionConfig) -> Eva02VisionConfig:
    """Pick the RoPE pre-training grid whose tables equal the saved copies (EVA02-CLIP's 16, else the grid)."""
    from gcl_hf.modeling.vista.eva02 import rotary_tables

    saved = {k: v for k, v in state_dict.items() if k.startswith(_VISUAL) and k.endswith(("freqs_cos", "freqs_sin"))}
    if not saved:
        return vision
    grid = vision.image_size // vision.patch_size
    for pretrain in dict.fromkeys((16, grid)):
        candidate = Eva02VisionConfig(**{**vision.to_diff_dict(), "rope_pretrain_grid": pretrain})
        cos, sin = rotary_tables(candidate)
        tol = 1e-5 if next(iter(saved.values())).dtype == torch.float32 else 2e-3
        if all(v.shape == cos.shape and torch.allclose(v.float(), cos if k.endswith("cos") else sin, atol=tol)
               for k, v in saved.items()):
            return candidate
    key = sorted(saved)[0]
    raise VistaConversionError(f"{key}: the saved RoPE table matches no pre-training grid (tried 16 and {grid})")


def _text_config(state_dict: dict[str, torch.Tensor], text_config: Any) -> Any:
    """``text_config`` with the sizes the ``bge_*`` tensors have."""
    emb = "bge_embeddings."
    for key in ("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight"):
        if emb + key not in state_dict:
            raise VistaConversionError(f"missing key {emb + key!r}: not a VISTA (BGE) checkpoint")
    words = state_dict[emb + "word_embeddings.weight"]
    layers = {int(m.group(1)) for k in state_dict if (m := re.match(r"bge_encoder\.layer\.(\d+)\.", k))}
    if not layers:
        raise VistaConversionError("no bge_encoder.layer.N.* keys: not a VISTA (BGE) checkpoint")
    inter = state_dict.get("bge_encoder.layer.0.intermediate.dense.weight")
    text_config.vocab_size = words.shape[0]
    text_config.hidden_size = words.shape[1]
    text_config.max_position_embeddings = state_dict[emb + "position_embeddings.weight"].shape[0]
    text_config.type_vocab_size = state_dict[emb + "token_type_embeddings.weight"].shape[0]
    text_config.num_hidden_layers = max(layers) + 1
    if inter is not None:
        text_config.intermediate_size = inter.shape[0]
    if text_config.hidden_size % text_config.num_attention_heads:
        raise VistaConversionError(f"bge_embeddings.word_embeddings.weight: width {text_config.hidden_size} is not a "
                                   f"multiple of the text model's {text_config.num_attention_heads} heads")
    return text_config


def convert_vista_state_dict(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Reference keys → `VistaModel` keys; returns ``(mapped, unused)``. Unknown keys raise, all named."""
    mapped: dict[str, torch.Tensor] = {}
    unused, unknown = [], []
    for key, value in state_dict.items():
        if key.startswith("bge_embeddings.") and key not in _UNUSED:
            mapped["text_model.embeddings." + key[len("bge_embeddings."):]] = value
        elif key.startswith("bge_encoder."):
            mapped["text_model.encoder." + key[len("bge_encoder."):]] = value
        elif key.startswith("bge_pooler.") or key in _UNUSED:
            unused.append(key)
        elif key.startswith("visual_proj."):
            mapped["visual_projection." + key[len("visual_proj."):]] = value
        elif key.startswith(_VISUAL):
            sub = key[len(_VISUAL):]
            block = _BLOCK.match(sub)
            if sub in _VISION_KEYS:
                mapped[_VISION_KEYS[sub]] = value
            elif sub in _UNUSED_VISION or (block and _rope_key(block.group(2))):
                unused.append(key)
            elif block and block.group(2) in _BLOCK_KEYS:
                mapped[f"vision_model.layers.{block.group(1)}.{_BLOCK_KEYS[block.group(2)]}"] = value
            else:
                unknown.append(key)
        else:
            unknown.append(key)
    if unknown:
        shown = ", ".join(sorted(unknown)[:10]) + (f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else "")
        raise VistaConversionError(f"unknown keys, not in VISTA's layout: {shown}")
    return mapped, sorted(unused)


def _source_dtype(state_dict: dict[str, torch.Tensor]) -> torch.dtype:
    dtypes = {v.dtype for v in state_dict.values() if v.is_floating_point()}
    if len(dtypes) == 1:
        return dtypes.pop()
    return state_dict["visual_proj.weight"].dtype if "visual_proj.weight" in state_dict else torch.float32


def convert_vista(checkpoint: str | os.PathLike, text_model: str | os.PathLike, output: str | os.PathLike,
                  *, revision: str | None = None) -> VistaConversion:
    """Convert ``checkpoint`` (a VISTA ``.pth``) with ``text_model``'s config and tokenizer (``BAAI/bge-base-en-v1.5``
    for ``Visualized_base_en_v1.5.pth``, ``BAAI/bge-m3`` for ``Visualized_m3.pth``) into ``output``."""
    from transformers import AutoConfig, AutoTokenizer
    from transformers.initialization import no_init_weights

    from gcl_hf.modeling.vista.image_processing_vista import VistaImageProcessor, VistaProcessor
    from gcl_hf.modeling.vista.modeling_vista import VistaModel

    path = Path(checkpoint)
    import pickle

    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VistaConversionError(f"{path}: not a plain state_dict, torch.load(weights_only=True) refused it "
                                   f"({first})") from None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise VistaConversionError(f"{path}: expected one flat state_dict (key -> tensor), got {type(state_dict).__name__}")
    text_config = _text_config(state_dict, AutoConfig.from_pretrained(text_model, revision=revision))
    tokenizer = AutoTokenizer.from_pretrained(text_model, revision=revision)
    prompt = list(tokenizer("")["input_ids"])
    if not prompt or max(prompt) >= text_config.vocab_size:
        raise VistaConversionError(f"{text_model}: its tokenizer's ids of '' ({prompt}) do not fit the checkpoint's "
                                   f"{text_config.vocab_size}-token vocabulary")
    vision = _check_rope(state_dict, infer_vision_config(state_dict))
    dtype = _source_dtype(state_dict)
    config = VistaConfig(text_config=text_config.to_dict(), vision_config=vision.to_dict(),
                         image_only_input_ids=prompt)
    mapped, unused = convert_vista_state_dict(state_dict)
    with no_init_weights():
        model = VistaModel(config)
    model.to(dtype)
    expected = set(model.state_dict())
    missing = sorted(expected - set(mapped))
    if missing:
        shown = ", ".join(missing[:10]) + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else "")
        raise VistaConversionError(f"{path}: missing weights for {shown}")
    extra = sorted(set(mapped) - expected)
    if extra:
        raise VistaConversionError(f"{path}: keys the model does not have: {', '.join(extra[:10])}")
    for key, value in mapped.items():
        target = model.state_dict()[key]
        if target.shape != value.shape:
            raise VistaConversionError(f"{path}: {key} has shape {tuple(value.shape)}, the model expects "
                                       f"{tuple(target.shape)}")
    model.load_state_dict(mapped, strict=True)
    model.config.dtype = dtype
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out)
    limit = config.max_fused_text_length
    if not isinstance(tokenizer.model_max_length, int) or tokenizer.model_max_length > limit:
        tokenizer.model_max_length = limit
    size = vision.image_size
    image_processor = VistaImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    VistaProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return VistaConversion(output=out, config=model.config, dtype=dtype, unused_keys=unused)
