"""What gcl-hf needs from a CLIP-like backbone: its pooled projections, a check that it is one, the embedding
size, and the GCL settings it implies (SigLIP's sigmoid objective, a backbone's own fused encoder).

Each family transformers ships is described once, in :data:`FAMILIES` (objective, text padding and length, LoRA
target modules, temperature parameters, the processor outputs each tower takes, or why it is refused); the
library, the collator, the trainer and the CLI read it through :func:`family_of`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from gcl_hf.modeling.fusion import has_fused_encoder

__all__ = [
    "FAMILIES",
    "GENERIC_FAMILY",
    "BackboneFamily",
    "IMAGE_INPUTS",
    "TEXT_INPUTS",
    "backbone_defaults",
    "check_backbone",
    "embedding_dim",
    "family_of",
    "is_peft_model",
    "pooled_features",
    "split_inputs",
]

#: Processor outputs made by an image processor: they go to the image tower (SigLIP 2's NaFlex processor adds
#: ``pixel_attention_mask`` and ``spatial_shapes`` beside ``pixel_values``).
IMAGE_INPUTS = ("pixel_values", "pixel_attention_mask", "spatial_shapes", "pixel_mask", "image_sizes")
#: Processor outputs made by a tokenizer: they go to the text tower.
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


_ATTENTION = ("q_proj", "k_proj", "v_proj", "out_proj")  # CLIP-style attention projections
_BERT_ATTENTION = ("query", "key", "value")  # BERT / XLM-R text towers


@dataclass(frozen=True)
class BackboneFamily:
    """What one family of CLIP-like backbones implies for GCL training and encoding.

    ``model_types``: the ``config.model_type`` values of the family. ``objective``: the loss it was trained
    with. ``text_padding`` / ``text_max_length``: how its captions were tokenized (SigLIP pools the last
    position, so it needs its training padding). ``lora_target_modules``: module names that get LoRA adapters
    by default (attention projections of both towers). ``logit_scale`` / ``logit_bias``: the backbone's own
    temperature parameters, if any (a backbone without ``logit_scale`` gets GCL's own). ``image_inputs`` /
    ``text_inputs``: the processor outputs each tower takes. ``refusal``: why gcl-hf does not wrap it (one line,
    with what to use instead); ``None`` for a supported family.
    """

    name: str
    model_types: tuple[str, ...]
    objective: Literal["softmax", "sigmoid"] = "softmax"
    text_padding: Literal["longest", "max_length"] = "longest"
    text_max_length: int | None = None
    lora_target_modules: tuple[str, ...] = _ATTENTION
    logit_scale: str | None = "logit_scale"
    logit_bias: str | None = None
    image_inputs: tuple[str, ...] = ("pixel_values",)
    text_inputs: tuple[str, ...] = ("input_ids", "attention_mask")
    refusal: str | None = None


_SIGLIP = dict(objective="sigmoid", text_padding="max_length", text_max_length=64, logit_bias="logit_bias")
_NOT_RETRIEVAL = "use the CLIP-like checkpoint it was built from with CLIPModel"

#: Every CLIP-like family transformers ships (classes with both get_image_features and get_text_features).
FAMILIES: tuple[BackboneFamily, ...] = (
    BackboneFamily("CLIP", ("clip",)),
    BackboneFamily("SigLIP", ("siglip",), **_SIGLIP),
    BackboneFamily("SigLIP 2", ("siglip2",), **_SIGLIP,
                   image_inputs=("pixel_values", "pixel_attention_mask", "spatial_shapes")),
    BackboneFamily("MetaCLIP 2", ("metaclip_2",)),
    BackboneFamily("AltCLIP", ("altclip",), lora_target_modules=_ATTENTION + _BERT_ATTENTION),
    BackboneFamily("ChineseCLIP", ("chinese_clip",), lora_target_modules=_ATTENTION + _BERT_ATTENTION,
                   text_inputs=("input_ids", "attention_mask", "token_type_ids")),
    BackboneFamily("ALIGN", ("align",), lora_target_modules=(*_BERT_ATTENTION, "project_conv"), logit_scale=None,
                   text_inputs=("input_ids", "attention_mask", "token_type_ids")),
    BackboneFamily("BLIP", ("blip",), lora_target_modules=("qkv", "projection", *_BERT_ATTENTION)),
    BackboneFamily("VISTA", ("vista",), lora_target_modules=_BERT_ATTENTION + _ATTENTION, logit_scale=None,
                   text_inputs=("input_ids", "attention_mask", "token_type_ids")),  # BGE + EVA02, its own fusion
    BackboneFamily("AIMv2", ("aimv2",)),
    BackboneFamily("CLIPSeg", ("clipseg",)),
    BackboneFamily("GroupViT", ("groupvit",)),
    BackboneFamily("OWL-ViT", ("owlvit", "owlv2"), refusal=(
        "its weights are fine-tuned for open-vocabulary detection (per-box embeddings); the pooled image "
        f"feature is not a trained retrieval embedding; {_NOT_RETRIEVAL}")),
    BackboneFamily("FLAVA", ("flava",), refusal=(
        "its get_image_features / get_text_features return unprojected per-token hidden states, not one "
        "retrieval embedding per item; use a CLIP-like dual encoder (CLIPModel, SiglipModel, ...)")),
    BackboneFamily("BLIP-2", ("blip-2",), refusal=(
        "its get_text_features are language-model outputs and its image features Q-Former tokens, not one "
        "retrieval embedding per item; use BlipModel (BLIP's ITC projections) or a CLIP-like dual encoder")),
)
#: Defaults for a CLIP-like backbone of a family not in :data:`FAMILIES` (objective read from its parameters).
GENERIC_FAMILY = BackboneFamily("CLIP-like", ())


def family_of(backbone_or_config: Any) -> BackboneFamily:
    """The :class:`BackboneFamily` of a backbone (plain or peft-wrapped), a ``GCLModel``, a config or a
    ``model_type`` string; :data:`GENERIC_FAMILY` for a type no entry lists."""
    model_type = backbone_or_config
    if not isinstance(model_type, str):
        config = getattr(backbone_or_config, "config", backbone_or_config)
        config = getattr(config, "backbone_config", None) or config  # a GCLModel / GCLConfig: its backbone's
        model_type = config.get("model_type") if isinstance(config, Mapping) else getattr(config, "model_type", None)
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    return GENERIC_FAMILY


def split_inputs(inputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(image_inputs, text_inputs)`` of a processor output (or a collated batch), routed by what each entry is;
    ``None`` values are dropped. An entry that is neither is a `TypeError` naming it, never silently given to a
    tower it does not belong to."""
    image, text, unknown = {}, {}, []
    for name, value in inputs.items():
        if value is None:
            continue
        if name in IMAGE_INPUTS:
            image[name] = value
        elif name in TEXT_INPUTS:
            text[name] = value
        else:
            unknown.append(name)
    if unknown:
        raise TypeError(
            f"unexpected model inputs {sorted(unknown)}: image inputs are {list(IMAGE_INPUTS)}, "
            f"text inputs {list(TEXT_INPUTS)}"
        )
    return image, text


def pooled_features(output: Any) -> torch.Tensor:
    """The projected, pooled embedding from a ``get_*_features`` result (output object or tensor)."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise TypeError(
            f"expected a tensor or an output with `pooler_output` from get_*_features, got {type(output).__name__}"
        )
    return pooled


def check_backbone(backbone: nn.Module) -> None:
    """Raise a clear `TypeError` unless ``backbone`` is a CLIP-like dual encoder whose features are retrieval
    embeddings (before any compute: a refused family's line says why and what to use instead)."""
    family = family_of(backbone)
    if family.refusal is not None:
        raise TypeError(f"{type(backbone).__name__} ({family.name}) is not supported: {family.refusal}")
    if family.name == "ALIGN":
        config = backbone.config
        vision = getattr(config.vision_config, "hidden_dim", None)
        if vision != config.projection_dim:
            raise TypeError(
                f"{type(backbone).__name__}: ALIGN has no image projection, so its image features "
                f"({vision}-d) and text projections ({config.projection_dim}-d) must match; set "
                "projection_dim to the vision hidden_dim (as kakaobrain/align-base does)"
            )
    missing = [m for m in ("get_image_features", "get_text_features") if not callable(getattr(backbone, m, None))]
    if missing:
        raise TypeError(
            f"{type(backbone).__name__} has no {' / '.join(missing)}: GCLModel wraps CLIP-like dual encoders "
            "(CLIPModel, SiglipModel, AltCLIPModel, ChineseCLIPModel, ...) whose class offers both "
            "get_image_features and get_text_features"
        )


def backbone_defaults(backbone: nn.Module) -> dict[str, Any]:
    """GCL settings a backbone implies: its family's objective (``"sigmoid"`` for SigLIP / SigLIP 2; for a family
    not in :data:`FAMILIES`, ``"sigmoid"`` when it has a ``logit_bias`` parameter), ``fusion="backbone"`` for one
    with its own fused encoder, and the starting temperature of one that has no ``logit_scale`` but names it
    (``config.logit_scale_init``, VISTA)."""
    defaults: dict[str, Any] = {}
    base = backbone.get_base_model() if is_peft_model(backbone) else backbone
    family = family_of(base)
    if family is not GENERIC_FAMILY:
        if family.objective != "softmax":
            defaults["objective"] = family.objective
    elif isinstance(getattr(base, "logit_bias", None), nn.Parameter):
        defaults["objective"] = "sigmoid"
    if has_fused_encoder(base):
        defaults["fusion"] = "backbone"
    defaults.update(_temperature_default(base))
    return defaults


def _temperature_default(base: nn.Module) -> dict[str, Any]:
    """A backbone with no learned ``logit_scale`` may name the (log) scale it was trained at in its config's
    ``logit_scale_init`` (VISTA: temperature 0.02 → log 50); the GCL temperature then starts there."""
    init = getattr(getattr(base, "config", None), "logit_scale_init", None)
    if isinstance(getattr(base, "logit_scale", None), nn.Parameter) or not isinstance(init, (int, float)):
        return {}
    return {"logit_scale_init": float(init)}


def is_peft_model(module: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(module, PeftModel)


def embedding_dim(backbone_config: Any) -> int:
    for attr in ("projection_dim", "projection_size"):
        if isinstance(getattr(backbone_config, attr, None), int):
            return getattr(backbone_config, attr)
    text = getattr(backbone_config, "text_config", None)
    for attr in ("projection_size", "projection_dim", "hidden_size"):
        if isinstance(getattr(text, attr, None), int):
            return getattr(text, attr)
    raise ValueError(f"cannot tell the embedding size of a {type(backbone_config).__name__}; set fusion != 'mlp'")
