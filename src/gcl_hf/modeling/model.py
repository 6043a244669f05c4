"""`GCLModel`: any CLIP-like dual encoder with image, text and fused embeddings and the GCL loss."""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from gcl_hf.modeling.configuration import GCLConfig
from gcl_hf.modeling.encode import EncodeMixin  # [usage] GCLModel.encode
from gcl_hf.modeling.fusion import FusionMLP, fuse

logger = logging.getLogger(__name__)

#: CLIP clamps its learned temperature so that the multiplier never exceeds 100.
MAX_LOGIT_SCALE = 100.0


@dataclass
class GCLOutput(ModelOutput):
    """Output of [`GCLModel.forward`]. Embeddings are L2-normalised; ``logit_scale`` is the multiplier."""

    loss: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    fused_embeds: torch.FloatTensor | None = None
    logit_scale: torch.FloatTensor | None = None
    logit_bias: torch.FloatTensor | None = None
    pair_losses: dict[str, torch.Tensor] | None = None


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


def is_peft_model(module: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(module, PeftModel)


def _embedding_dim(backbone_config: Any) -> int:
    for attr in ("projection_dim", "projection_size"):
        if isinstance(getattr(backbone_config, attr, None), int):
            return getattr(backbone_config, attr)
    text = getattr(backbone_config, "text_config", None)
    for attr in ("projection_size", "projection_dim", "hidden_size"):
        if isinstance(getattr(text, attr, None), int):
            return getattr(text, attr)
    raise ValueError(f"cannot tell the embedding size of a {type(backbone_config).__name__}; set fusion != 'mlp'")


class GCLPreTrainedModel(PreTrainedModel):
    config_class = GCLConfig
    config: GCLConfig
    base_model_prefix = "gcl"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        # Only our own modules: the backbone initialises (or loads) its own weights.
        if isinstance(module, FusionMLP):
            module.reset_parameters()


class GCLModel(EncodeMixin, GCLPreTrainedModel):  # [usage] EncodeMixin: encode(raw inputs), processor
    """A CLIP-like backbone that embeds images, texts and fused image+text items into one space.

    Build one with :meth:`from_backbone` (wrap a model or a checkpoint name) or ``from_pretrained`` (a saved
    GCL model). The fused embedding reuses the two tower outputs, so GCL training costs no extra encoder pass.
    """

    def __init__(self, config: GCLConfig, backbone: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        if backbone is None:
            backbone = AutoModel.from_config(copy.deepcopy(config.backbone_config))
        check_backbone(backbone)
        self.backbone = backbone
        self.embedding_dim = _embedding_dim(config.backbone_config)
        if not isinstance(getattr(self._unwrapped_backbone(), "logit_scale", None), nn.Parameter):
            self.log_logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)))
        if config.objective == "sigmoid" and not isinstance(
            getattr(self._unwrapped_backbone(), "logit_bias", None), nn.Parameter
        ):
            self.own_logit_bias = nn.Parameter(torch.tensor(float(config.logit_bias_init)))
        self.fusion_head = (
            FusionMLP(self.embedding_dim, config.fusion_hidden_size) if config.fusion == "mlp" else None
        )
        if config.lora_config:
            self._wrap_lora(config.lora_config)
        self.post_init()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_backbone(
        cls,
        name_or_model: str | os.PathLike | PreTrainedModel,
        *,
        revision: str | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        **config_overrides: Any,
    ) -> "GCLModel":
        """Wrap a CLIP-like model (an instance, a local directory or a Hub id) without changing its outputs.

        ``config_overrides`` set GCL fields (``fusion="mlp"``, ``objective="sigmoid"``, ...). The backbone's
        config is copied, never shared, so the wrapper cannot alter the backbone's attention settings.
        """
        if isinstance(name_or_model, (str, os.PathLike)):
            backbone = AutoModel.from_pretrained(name_or_model, revision=revision, **(backbone_kwargs or {}))
        else:
            backbone = name_or_model
        check_backbone(backbone)
        if is_peft_model(backbone):
            raise TypeError("pass the plain backbone and apply LoRA with GCLModel.apply_lora (or GCLTrainer)")
        backbone_config = backbone.config.to_dict()
        config = GCLConfig(backbone_config=backbone_config, **config_overrides)
        return cls(config, backbone=backbone)

    # ------------------------------------------------------------------ temperature
    def _unwrapped_backbone(self) -> PreTrainedModel:
        backbone = self.backbone
        return backbone.get_base_model() if is_peft_model(backbone) else backbone

    @property
    def log_logit_scale_param(self) -> nn.Parameter:
        """The learned *log* temperature (the backbone's ``logit_scale`` when it has one)."""
        own = getattr(self, "log_logit_scale", None)
        return own if own is not None else self._unwrapped_backbone().logit_scale

    @property
    def logit_bias_param(self) -> nn.Parameter | None:
        own = getattr(self, "own_logit_bias", None)
        return own if own is not None else getattr(self._unwrapped_backbone(), "logit_bias", None)

    def logit_scale(self) -> torch.Tensor:
        """The similarity multiplier ``exp(log_scale)``, clamped at 100 as CLIP training does."""
        return self.log_logit_scale_param.exp().clamp(max=MAX_LOGIT_SCALE).reshape(())

    # ------------------------------------------------------------------ encoders
    def image_features(self, pixel_values: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Raw (un-normalised) projected image features."""
        return pooled_features(self.backbone.get_image_features(pixel_values=pixel_values, **kwargs))

    def text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """Raw (un-normalised) projected text features."""
        return pooled_features(
            self.backbone.get_text_features(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        )

    def fuse_features(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Fused, L2-normalised embedding from raw image and text features (``config.fusion``)."""
        return fuse(self.config.fusion, image_features, text_features, self.fusion_head)

    def encode_image(self, pixel_values: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """L2-normalised image embeddings ``[N, D]``."""
        return F.normalize(self.image_features(pixel_values, **kwargs), dim=-1)

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """L2-normalised text embeddings ``[N, D]``."""
        return F.normalize(self.text_features(input_ids, attention_mask, **kwargs), dim=-1)

    def encode_fused(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """L2-normalised embeddings ``[N, D]`` of fused items (image n together with text n)."""
        _check_pairing(pixel_values, input_ids)
        return self.fuse_features(
            self.image_features(pixel_values), self.text_features(input_ids, attention_mask, **kwargs)
        )

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        return_loss: bool | None = None,
        **text_kwargs: Any,
    ) -> GCLOutput:
        """Embed a batch of image–caption pairs; with ``return_loss=True`` also compute the GCL loss.

        The fused embedding of pair n reuses image n's and caption n's tower outputs (no third encoder pass).
        """
        if pixel_values is None and input_ids is None:
            raise ValueError("GCLModel.forward needs pixel_values, input_ids or both")
        image = self.image_features(pixel_values) if pixel_values is not None else None
        text = self.text_features(input_ids, attention_mask, **text_kwargs) if input_ids is not None else None
        fused = None
        if image is not None and text is not None:
            _check_pairing(pixel_values, input_ids)
            fused = self.fuse_features(image, text)
        image_embeds = F.normalize(image, dim=-1) if image is not None else None
        text_embeds = F.normalize(text, dim=-1) if text is not None else None
        scale = self.logit_scale()
        bias = self.logit_bias_param if self.config.objective == "sigmoid" else None
        loss = pair_losses = None
        if return_loss:
            loss, pair_losses = self.loss_from_embeddings(image_embeds, text_embeds, fused, logit_scale=scale,
                                                          logit_bias=bias)
        return GCLOutput(
            loss=loss,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            fused_embeds=fused,
            logit_scale=scale,
            logit_bias=bias,
            pair_losses=pair_losses,
        )

    def loss_from_embeddings(
        self,
        image_embeds: torch.Tensor | None,
        text_embeds: torch.Tensor | None,
        fused_embeds: torch.Tensor | None,
        *,
        logit_scale: torch.Tensor | None = None,
        logit_bias: torch.Tensor | None = None,
        return_pair_losses: bool = True,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The GCL loss of L2-normalised embeddings with this model's settings (``config`` pairs, weights,
        negatives, objective): what ``forward(return_loss=True)`` computes.

        ``logit_scale`` / ``logit_bias`` default to the model's (:meth:`logit_scale`, :attr:`logit_bias_param`);
        the gradient cache passes detached copies to get the loss's gradient with respect to them. The bias
        is used by the sigmoid objective only. Returns ``(loss, {"image->text": ..., ...})``, or the loss
        alone with ``return_pair_losses=False``.
        """
        from gcl_hf.losses.gcl import gcl_loss

        config = self.config
        scale = self.logit_scale() if logit_scale is None else logit_scale
        bias = None
        if config.objective == "sigmoid":
            bias = self.logit_bias_param if logit_bias is None else logit_bias
        return gcl_loss(
            image_embeds,
            text_embeds,
            fused_embeds,
            scale,
            pairs=config.pair_tuples,
            pair_weights=config.pair_weights,
            negatives=config.negatives,
            objective=config.objective,
            logit_bias=bias.reshape(()) if bias is not None else None,
            return_pair_losses=return_pair_losses,
        )

    # ------------------------------------------------------------------ LoRA
    def _wrap_lora(self, lora_config: dict[str, Any]) -> None:
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(**{k: v for k, v in lora_config.items() if k not in ("peft_type",)})
        self.backbone = get_peft_model(self.backbone, cfg)

    def apply_lora(self, lora_config: Any, *, train_logit_scale: bool = True) -> "GCLModel":
        """Add LoRA adapters (a peft ``LoraConfig``) to the backbone; only adapters, the fusion head and,
        if ``train_logit_scale``, the temperature stay trainable. The adapter config is recorded in
        ``config.lora_config`` so ``save_pretrained``/``from_pretrained`` round-trip the unmerged model."""
        if is_peft_model(self.backbone):
            raise ValueError("the backbone already carries LoRA adapters; merge_lora() first")
        from peft import get_peft_model

        self.backbone = get_peft_model(self.backbone, lora_config)
        self.config.lora_config = json.loads(json.dumps(lora_config.to_dict(), default=_jsonable))
        self.log_logit_scale_param.requires_grad_(train_logit_scale)
        bias = self.logit_bias_param
        if bias is not None:
            bias.requires_grad_(train_logit_scale)
        return self

    def merge_lora(self) -> "GCLModel":
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
        self._save_usage_files(save_directory, form="backbone", **kwargs)  # [usage]

    # [usage] save hook: the attached processor and the sentence-transformers files go beside the weights
    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        super().save_pretrained(save_directory, *args, **kwargs)
        self._save_usage_files(save_directory, form="full", **kwargs)

    def _save_usage_files(self, save_directory: str | os.PathLike, *, form: str, **kwargs: Any) -> None:
        if not kwargs.get("is_main_process", True):
            return
        from gcl_hf.integrations.sentence_transformers import write_sentence_transformers_files

        if self.processor is not None:
            self.processor.save_pretrained(save_directory)
        write_sentence_transformers_files(self, save_directory, form=form)

    # ------------------------------------------------------------------ Hub
    def push_to_hub(
        self,
        repo_id: str,
        *,
        form: str = "full",
        processor: Any | None = None,
        eval_results: Any | None = None,
        training_info: Any | None = None,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str = "50GB",
        tags: list[str] | None = None,
        **card_kwargs: Any,
    ) -> str:
        """Publish with a GCL model card: ``form`` is ``"full"``, ``"adapter"`` (LoRA only) or ``"backbone"``
        (the merged plain checkpoint). See :func:`gcl_hf.hub.publish`."""
        from gcl_hf.hub.publish import publish

        return publish(
            self, repo_id, form=form, processor=processor, eval_results=eval_results,
            training_info=training_info, commit_message=commit_message,
            commit_description=commit_description, private=private, token=token, revision=revision,
            create_pr=create_pr, max_shard_size=max_shard_size, tags=tags, **card_kwargs,
        )

    def get_input_embeddings(self) -> nn.Module:
        backbone = self._unwrapped_backbone()
        text_model = getattr(backbone, "text_model", backbone)
        return text_model.get_input_embeddings()


def _check_pairing(pixel_values: torch.Tensor, input_ids: torch.Tensor) -> None:
    if pixel_values.shape[0] != input_ids.shape[0]:
        raise ValueError(
            f"fused items need one image per text: got {pixel_values.shape[0]} images (pixel_values) "
            f"and {input_ids.shape[0]} texts (input_ids)"
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if all(isinstance(v, str) for v in value) else list(value)
    return str(value)


__all__ = ["GCLModel", "GCLOutput", "GCLPreTrainedModel"]
