"""`GCLModel`: any CLIP-like dual encoder with image, text and fused embeddings and the GCL loss."""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from gcl_hf.modeling.backbone import (
    backbone_defaults,
    check_backbone,
    embedding_dim,
    is_peft_model,
    pooled_features,
    split_inputs,
)
from gcl_hf.losses.settings import MODALITY_NAMES, Modality
from gcl_hf.modeling.configuration import GCLConfig
from gcl_hf.modeling.encode import EncodeMixin
from gcl_hf.modeling.fusion import (
    ALL_FEATURES_METHOD,
    FUSED_ENCODER_METHOD,
    FusionMLP,
    fuse,
    has_fused_encoder,
)
from gcl_hf.modeling.lora import LoraMixin
from gcl_hf.modeling.publishing import PublishingMixin

logger = logging.getLogger(__name__)

#: The three kinds of item gcl-hf embeds (the one vocabulary, owned by `gcl_hf.losses.settings`).
MODALITIES: tuple[str, ...] = MODALITY_NAMES

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


class GCLModel(EncodeMixin, LoraMixin, PublishingMixin, GCLPreTrainedModel):
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
        self.embedding_dim = embedding_dim(config.backbone_config)
        if not isinstance(getattr(self._unwrapped_backbone(), "logit_scale", None), nn.Parameter):
            self.log_logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)))
        if config.fusion == "backbone" and not has_fused_encoder(self._unwrapped_backbone()):
            raise ValueError(f"fusion='backbone' but {type(backbone).__name__} has no {FUSED_ENCODER_METHOD}")
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
        allow_pickle: bool = False,
        **config_overrides: Any,
    ) -> "GCLModel":
        """Wrap a CLIP-like model (an instance, a local directory or a Hub id) without changing its outputs.

        ``config_overrides`` set GCL fields (``fusion="mlp"``, ``pairs=CLIP_PAIRS``, ...). What the backbone
        itself implies is decided here, so the library, the trainer and the CLI agree (see
        :func:`backbone_defaults`): a backbone with a ``logit_bias`` (SigLIP) trains with
        ``objective="sigmoid"``, and one with its own fused encoder uses ``fusion="backbone"``; an explicit
        override wins. The backbone's config is copied, never shared, so the wrapper cannot alter the
        backbone's attention settings.
        """
        if isinstance(name_or_model, (str, os.PathLike)):
            from gcl_hf.modeling.loading import load_backbone

            backbone = load_backbone(name_or_model, revision=revision, allow_pickle=allow_pickle,
                                     **(backbone_kwargs or {}))
        else:
            backbone = name_or_model
        check_backbone(backbone)
        if is_peft_model(backbone):
            raise TypeError("pass the plain backbone and apply LoRA with GCLModel.apply_lora (or GCLTrainer)")
        overrides = {**backbone_defaults(backbone), **{k: v for k, v in config_overrides.items() if v is not None}}
        config = GCLConfig(backbone_config=backbone.config.to_dict(), **overrides)
        return cls(config, backbone=backbone)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any, allow_pickle: bool = False,
        **kwargs: Any,
    ) -> "GCLModel":
        """``PreTrainedModel.from_pretrained`` under gcl-hf's loading policy: safetensors only unless
        ``allow_pickle=True``, never remote code (also what ``AutoModel.from_pretrained`` runs for a GCL model)."""
        from gcl_hf.modeling.loading import explain_unsafe, safe_loading_kwargs

        with explain_unsafe(pretrained_model_name_or_path, allow_pickle):
            return super().from_pretrained(pretrained_model_name_or_path, *model_args,
                                           **safe_loading_kwargs(kwargs, allow_pickle=allow_pickle))

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
    # Processor outputs are routed by what they are (`split_inputs`): the image processor's (``pixel_values``,
    # SigLIP 2's ``pixel_attention_mask`` / ``spatial_shapes``) to the image tower, the tokenizer's to the text
    # tower, both to a backbone's own fused encoder.
    def image_features(self, pixel_values: torch.Tensor, **image_inputs: Any) -> torch.Tensor:
        """Raw (un-normalised) projected image features; ``image_inputs`` are the image processor's other outputs."""
        return pooled_features(self.backbone.get_image_features(pixel_values=pixel_values, **image_inputs))

    def text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **text_inputs: Any
    ) -> torch.Tensor:
        """Raw (un-normalised) projected text features."""
        return pooled_features(
            self.backbone.get_text_features(input_ids=input_ids, attention_mask=attention_mask, **text_inputs)
        )

    def fuse_features(
        self, image_features: torch.Tensor, text_features: torch.Tensor, *, normalize: bool = True
    ) -> torch.Tensor:
        """Fused embedding from raw image and text features (``config.fusion``), L2-normalised unless
        ``normalize=False``."""
        return fuse(self.config.fusion, image_features, text_features, self.fusion_head, normalize=normalize)

    def fused_features(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
        **inputs: Any,
    ) -> torch.Tensor:
        """Raw fused features from the backbone's own fused encoder (``fusion="backbone"``), given every
        image-processor and tokenizer output."""
        method = getattr(self.backbone, FUSED_ENCODER_METHOD)
        return pooled_features(method(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                                      **inputs))

    def _all_features(
        self, image_inputs: dict[str, Any], text_inputs: dict[str, Any], *, fused: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Raw image and text features of paired inputs, and raw fused features when ``fusion="backbone"`` and
        ``fused`` (one backbone call when it offers ``get_image_text_fused_features``, so its image encoder runs
        once)."""
        _check_pairing(image_inputs["pixel_values"], text_inputs["input_ids"])
        if self.config.fusion != "backbone" or not fused:
            return self.image_features(**image_inputs), self.text_features(**text_inputs), None
        all_features = getattr(self.backbone, ALL_FEATURES_METHOD, None)
        if callable(all_features):
            image, text, fused = (pooled_features(f) for f in all_features(**image_inputs, **text_inputs))
            return image, text, fused
        return (self.image_features(**image_inputs), self.text_features(**text_inputs),
                self.fused_features(**image_inputs, **text_inputs))

    # SigLIP 2's NaFlex inputs are named: sentence-transformers passes a method only the parameters it names
    def encode_image(self, pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor | None = None,
                     spatial_shapes: torch.Tensor | None = None, **image_inputs: Any) -> torch.Tensor:
        """L2-normalised image embeddings ``[N, D]``."""
        return self.embed({"pixel_values": pixel_values, "pixel_attention_mask": pixel_attention_mask,
                           "spatial_shapes": spatial_shapes, **image_inputs}, "image")

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **text_inputs: Any
    ) -> torch.Tensor:
        """L2-normalised text embeddings ``[N, D]``."""
        return self.embed({"input_ids": input_ids, "attention_mask": attention_mask, **text_inputs}, "text")

    def encode_fused(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor | None = None, pixel_attention_mask: torch.Tensor | None = None,
                     spatial_shapes: torch.Tensor | None = None, **inputs: Any) -> torch.Tensor:
        """L2-normalised embeddings ``[N, D]`` of fused items (image n together with text n); ``inputs`` are the
        processor's other outputs, each routed to the tower it belongs to."""
        return self.embed({"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask,
                           "pixel_attention_mask": pixel_attention_mask, "spatial_shapes": spatial_shapes,
                           **inputs}, "fused")

    def embed(
        self, inputs: Mapping[str, Any], modality: Modality, *, normalize: bool = True
    ) -> torch.Tensor:
        """Embeddings ``[N, D]`` of one processed batch of ``modality`` items: the one per-batch step every
        encoding path (``encode``, datasets, the index, the integrations) runs.

        ``inputs`` is the processor's output as it is (tensors on any device: they are moved to the model's, float
        tensors cast to its dtype); each entry goes to the tower it belongs to. ``normalize=False`` gives the raw
        projections (for fused items: the fusion vector before its normalisation).
        """
        if modality not in MODALITIES:
            raise ValueError(f"modality={modality!r}: expected one of {MODALITIES}")
        param = next(self.parameters())
        image_inputs, text_inputs = split_inputs(
            {k: _to(v, param.device, param.dtype) for k, v in inputs.items()}
        )
        if modality == "image":
            features = self.image_features(**image_inputs)
        elif modality == "text":
            features = self.text_features(**text_inputs)
        else:
            _check_pairing(image_inputs["pixel_values"], text_inputs["input_ids"])
            if self.config.fusion != "backbone":
                return self.fuse_features(self.image_features(**image_inputs), self.text_features(**text_inputs),
                                          normalize=normalize)
            features = self.fused_features(**image_inputs, **text_inputs)
        return F.normalize(features, dim=-1) if normalize else features

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        return_loss: bool | None = None,
        **inputs: Any,
    ) -> GCLOutput:
        """Embed a batch of image–caption pairs; with ``return_loss=True`` also compute the GCL loss.

        ``inputs`` are the processor's other outputs (e.g. SigLIP 2's ``pixel_attention_mask`` and
        ``spatial_shapes``, a tokenizer's ``token_type_ids``), each routed to the tower it belongs to. The fused
        embedding of pair n reuses image n's and caption n's tower outputs (no third encoder pass), except with
        ``fusion="backbone"``, where the backbone's own fused encoder runs (once with the image encoder when the
        backbone offers ``get_image_text_fused_features``).
        """
        if pixel_values is None and input_ids is None:
            raise ValueError("GCLModel.forward needs pixel_values, input_ids or both")
        image_inputs, text_inputs = split_inputs(
            {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask, **inputs}
        )
        image = text = fused = None
        if pixel_values is not None and input_ids is not None:
            # in training, a loss without a fused pair (CLIP's) skips the fused embedding: no backbone fused pass
            want_fused = not self.training or "fused" in self.config.loss_settings.modalities
            image, text, fused_raw = self._all_features(image_inputs, text_inputs, fused=want_fused)
            if fused_raw is not None:
                fused = F.normalize(fused_raw, dim=-1)
            elif want_fused:
                fused = self.fuse_features(image, text)
        elif pixel_values is not None:
            image = self.image_features(**image_inputs)
        else:
            text = self.text_features(**text_inputs)
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
        from gcl_hf.losses.gcl import gcl_loss_from_settings

        settings = self.config.loss_settings
        scale = self.logit_scale() if logit_scale is None else logit_scale
        bias = None
        if settings.objective == "sigmoid":
            bias = self.logit_bias_param if logit_bias is None else logit_bias
        return gcl_loss_from_settings(
            settings,
            image_embeds,
            text_embeds,
            fused_embeds,
            scale,
            logit_bias=bias.reshape(()) if bias is not None else None,
            return_pair_losses=return_pair_losses,
        )

    def get_input_embeddings(self) -> nn.Module:
        backbone = self._unwrapped_backbone()
        text_model = getattr(backbone, "text_model", backbone)
        return text_model.get_input_embeddings()


def _to(value: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """A processor output on the model's device; floating tensors (pixels) in the model's dtype."""
    if not isinstance(value, torch.Tensor):
        return value
    return value.to(device, dtype) if value.is_floating_point() else value.to(device)


def _check_pairing(pixel_values: torch.Tensor, input_ids: torch.Tensor) -> None:
    if pixel_values.shape[0] != input_ids.shape[0]:
        raise ValueError(
            f"fused items need one image per text: got {pixel_values.shape[0]} images (pixel_values) "
            f"and {input_ids.shape[0]} texts (input_ids)"
        )


__all__ = ["MODALITIES", "GCLModel", "GCLOutput", "GCLPreTrainedModel", "Modality"]
