"""What gcl-hf needs from a CLIP-like backbone: its pooled projections, a check that it is one, the embedding
size, and the GCL settings it implies (SigLIP's sigmoid objective, a backbone's own fused encoder)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from gcl_hf.modeling.fusion import has_fused_encoder

__all__ = [
    "IMAGE_INPUTS",
    "TEXT_INPUTS",
    "backbone_defaults",
    "check_backbone",
    "embedding_dim",
    "is_peft_model",
    "pooled_features",
    "split_inputs",
]

#: Processor outputs made by an image processor: they go to the image tower (SigLIP 2's NaFlex processor adds
#: ``pixel_attention_mask`` and ``spatial_shapes`` beside ``pixel_values``).
IMAGE_INPUTS = ("pixel_values", "pixel_attention_mask", "spatial_shapes", "pixel_mask", "image_sizes")
#: Processor outputs made by a tokenizer: they go to the text tower.
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


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
    """Raise a clear `TypeError` unless ``backbone`` is a CLIP-like dual encoder."""
    missing = [m for m in ("get_image_features", "get_text_features") if not callable(getattr(backbone, m, None))]
    if missing:
        raise TypeError(
            f"{type(backbone).__name__} has no {' / '.join(missing)}: GCLModel wraps CLIP-like dual encoders "
            "(CLIPModel, SiglipModel, AltCLIPModel, ChineseCLIPModel, ...) whose class offers both "
            "get_image_features and get_text_features"
        )


def backbone_defaults(backbone: nn.Module) -> dict[str, Any]:
    """GCL settings a backbone implies: ``objective="sigmoid"`` for one trained with SigLIP's loss (it has a
    ``logit_bias`` parameter), ``fusion="backbone"`` for one with its own fused encoder, and the starting
    temperature of one that has no ``logit_scale`` but names it (``config.logit_scale_init``, VISTA)."""
    defaults: dict[str, Any] = {}
    base = backbone.get_base_model() if is_peft_model(backbone) else backbone
    if isinstance(getattr(base, "logit_bias", None), nn.Parameter):
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
