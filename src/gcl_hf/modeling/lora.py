"""LoRA on the backbone through peft: apply, merge, and save the merged backbone as a plain checkpoint."""

from __future__ import annotations

import copy
import json
import logging
import os
from typing import Any

from transformers import PreTrainedModel

from gcl_hf.modeling.backbone import BackboneFamily, family_of, is_peft_model

__all__ = ["LoraMixin", "check_lora_targets"]

logger = logging.getLogger("gcl_hf.modeling")


def check_lora_targets(backbone: Any, targets: Any) -> None:
    """Raise `ValueError` (one line, naming the targets and some of the backbone's module names) when LoRA
    ``targets`` (names or suffixes, as peft matches a list) match no module of ``backbone``. A regex string
    or ``"all-linear"`` is left to peft."""
    if not targets or isinstance(targets, str):
        return
    targets = sorted(str(t) for t in targets)
    names = [name for name, _ in backbone.named_modules() if name]
    if any(name == t or name.endswith("." + t) for name in names for t in targets):
        return
    linear = sorted({name.rsplit(".", 1)[-1] for name, module in backbone.named_modules()
                     if name and hasattr(module, "in_features") and not name.rsplit(".", 1)[-1].isdigit()})
    raise ValueError(f"LoRA target modules {','.join(targets)} match no module of the {type(backbone).__name__}; "
                     f"its linear layers are named {', '.join(linear[:12]) or '(none)'}")


class LoraMixin:
    """`GCLModel`'s LoRA methods (the adapter config is kept in ``config.lora_config`` so that an unmerged model
    round-trips through ``save_pretrained`` / ``from_pretrained``)."""

    @property
    def family(self) -> BackboneFamily:
        """The backbone family's defaults (LoRA target modules, text padding and length, ...; see
        ``gcl_hf.modeling.backbone.FAMILIES``)."""
        return family_of(self.config.backbone_config)

    def _wrap_lora(self, lora_config: dict[str, Any]) -> None:
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(**{k: v for k, v in lora_config.items() if k not in ("peft_type",)})
        self.backbone = get_peft_model(self.backbone, cfg)

    def apply_lora(self, lora_config: Any, *, train_logit_scale: bool = True) -> "LoraMixin":
        """Add LoRA adapters (a peft ``LoraConfig``) to the backbone; only adapters, the fusion head and,
        if ``train_logit_scale``, the temperature stay trainable. The adapter config is recorded in
        ``config.lora_config`` so ``save_pretrained``/``from_pretrained`` round-trip the unmerged model."""
        if is_peft_model(self.backbone):
            raise ValueError("the backbone already carries LoRA adapters; merge_lora() first")
        from peft import get_peft_model

        check_lora_targets(self.backbone, getattr(lora_config, "target_modules", None))
        self.backbone = get_peft_model(self.backbone, lora_config)
        self.config.lora_config = json.loads(json.dumps(lora_config.to_dict(), default=_jsonable))
        self.log_logit_scale_param.requires_grad_(train_logit_scale)
        bias = self.logit_bias_param
        if bias is not None:
            bias.requires_grad_(train_logit_scale)
        return self

    def merge_lora(self) -> "LoraMixin":
        """Merge LoRA adapters into the backbone weights (no-op without LoRA)."""
        if is_peft_model(self.backbone):
            self.backbone = self.backbone.merge_and_unload()
            self.config.lora_config = None
        return self

    def merged_backbone(self) -> PreTrainedModel:
        """The backbone with any LoRA adapters merged, as a new plain model (this model is unchanged)."""
        if is_peft_model(self.backbone):
            return copy.deepcopy(self.backbone).merge_and_unload()
        return self.backbone

    def save_backbone(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Save the (merged) backbone as a plain checkpoint its own class loads (e.g. ``CLIPModel``).

        With ``fusion="sum"`` users of the plain backbone get the GCL-trained model with no new code: the fused
        embedding is ``normalize(image_features + text_features)``.
        """
        if self.fusion_head is not None:
            logger.warning("save_backbone: the 'mlp' fusion head is not part of the backbone and is not saved")
        if getattr(self, "log_logit_scale", None) is not None:
            logger.warning("save_backbone: the backbone has no logit_scale; the learned temperature is not saved")
        kwargs.pop("safe_serialization", None)
        self.merged_backbone().save_pretrained(save_directory, **kwargs)
        self._save_usage_files(save_directory, form="backbone", **kwargs)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if all(isinstance(v, str) for v in value) else list(value)
    return str(value)
