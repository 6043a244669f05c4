"""`VistaModel`: VISTA (Visualized BGE), a BGE text encoder that also reads EVA02 image tokens.

* text item: plain BGE — the text encoder on the tokens, the ``[CLS]`` state.
* fused item: the text encoder on ``[CLS] + image tokens + text tokens[1:]``; the image tokens are the ViT's
  last-block patch tokens through ``visual_projection``, plus BGE's position embeddings 1..P and BGE's embedding
  LayerNorm (no token-type embedding, no dropout); the text tokens are BGE's usual embeddings at positions 0 and
  P+1, P+2, ... (token type 0). The ``[CLS]`` state is the embedding.
* image item: the fused path with the tokenizer's encoding of ``""`` (``config.image_only_input_ids``).

Every ``get_*_features`` returns, as transformers 5 models do, a ``BaseModelOutputWithPooling`` whose
``pooler_output`` is the raw (un-normalised) ``[CLS]`` state ``[N, hidden]`` (``last_hidden_state``: the text
encoder's whole output sequence); ``GCLModel`` normalises. ``get_image_text_fused_features`` returns the three
``[CLS]`` tensors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from gcl_hf.modeling.vista.configuration_vista import VistaConfig
from gcl_hf.modeling.vista.eva02 import Eva02RotaryEmbedding, Eva02VisionModel, rotary_tables

__all__ = ["VISTA_LORA_TARGETS", "VistaModel", "VistaOutput", "VistaPreTrainedModel"]

logger = logging.getLogger(__name__)

#: LoRA target modules reaching both towers of a VISTA backbone: BGE's attention (``query``/``key``/``value``)
#: and EVA02's (``q_proj``/``k_proj``/``v_proj``/``out_proj``).
VISTA_LORA_TARGETS = ("query", "key", "value", "q_proj", "k_proj", "v_proj", "out_proj")


@dataclass
class VistaOutput(ModelOutput):
    """Raw ``[CLS]`` states of ``VistaModel.forward`` (``None`` for what was not asked)."""

    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    fused_embeds: torch.FloatTensor | None = None


class VistaPreTrainedModel(PreTrainedModel):
    config: VistaConfig
    config_class = VistaConfig
    base_model_prefix = "vista"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["Eva02Layer", "BertLayer", "XLMRobertaLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, Eva02VisionModel):
            std = module.config.initializer_range
            init.trunc_normal_(module.class_embedding, std=std)
            init.trunc_normal_(module.position_embedding, std=std)
        elif isinstance(module, Eva02RotaryEmbedding):  # buffers only: computed, never loaded
            cos, sin = rotary_tables(module.config)
            init.copy_(module.cos, cos)
            init.copy_(module.sin, sin)
        elif isinstance(getattr(module, "word_embeddings", None), nn.Embedding):  # the text encoder's embeddings
            for name, fill in (("position_ids", "arange"), ("token_type_ids", "zeros")):
                buffer = getattr(module, name, None)
                if isinstance(buffer, torch.Tensor):
                    init.copy_(buffer, torch.arange(buffer.shape[-1]).expand_as(buffer) if fill == "arange"
                               else torch.zeros_like(buffer))


class VistaModel(VistaPreTrainedModel):
    """VISTA: ``text_model`` (BGE: `BertModel` / `XLMRobertaModel`), ``vision_model`` (EVA02) and
    ``visual_projection`` (ViT width → text width). The names are the ones gcl-hf's tower freezing
    (``vision*``/``visual*`` vs ``text*``) and LoRA targeting (`VISTA_LORA_TARGETS`) see."""

    def __init__(self, config: VistaConfig) -> None:
        super().__init__(config)
        try:
            self.text_model = AutoModel.from_config(config.text_config, add_pooling_layer=False)
        except TypeError:  # an encoder class without a pooler switch
            self.text_model = AutoModel.from_config(config.text_config)
        self.vision_model = Eva02VisionModel(config.vision_config)
        self.visual_projection = nn.Linear(config.vision_config.hidden_size, config.text_config.hidden_size)
        self._warned_truncation = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_model.set_input_embeddings(value)

    @property
    def max_fused_text_length(self) -> int:
        """Longest fused text (tokens, specials included): the text encoder's positions minus the image tokens."""
        return self.config.max_fused_text_length

    # ------------------------------------------------------------------ the three embeddings
    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                          token_type_ids: torch.Tensor | None = None, **kwargs: Any) -> BaseModelOutputWithPooling:
        """Plain BGE: ``pooler_output`` = the raw ``[CLS]`` state of the text encoder, ``[N, hidden]``."""
        out = self.text_model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return _pooled(out.last_hidden_state)

    def image_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The image tokens as the text encoder reads them, ``[N, P, hidden]``: ViT patch tokens → projection
        → + BGE positions 1..P → BGE's embedding LayerNorm. The one ViT pass of an image."""
        patches = self.vision_model(pixel_values).last_hidden_state[:, 1:]
        tokens = self.visual_projection(patches)
        embeddings = self.text_model.embeddings
        positions = torch.arange(1, 1 + tokens.shape[1], device=tokens.device)
        return embeddings.LayerNorm(tokens + embeddings.position_embeddings(positions))

    def encode_with_image_tokens(self, image_tokens: torch.Tensor, input_ids: torch.Tensor,
                                 attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The text encoder's output sequence over ``[CLS] + image tokens + text tokens[1:]`` (texts right-padded);
        its first row is the fused item's raw ``[CLS]`` state."""
        batch, count = image_tokens.shape[0], image_tokens.shape[1]
        if input_ids.shape[0] != batch:
            raise ValueError(f"VistaModel: fused items need one image per text: got {batch} images and "
                             f"{input_ids.shape[0]} texts")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        input_ids, attention_mask = self._fit_fused_text(input_ids, attention_mask.to(torch.long), count)
        device = input_ids.device
        length = input_ids.shape[1]
        positions = torch.cat([torch.zeros(1, dtype=torch.long, device=device),
                               torch.arange(count + 1, count + length, device=device)])[None]
        text = self.text_model.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids),
                                          position_ids=positions)
        hidden = torch.cat([text[:, :1], image_tokens.to(text.dtype), text[:, 1:]], dim=1)
        mask = torch.cat([attention_mask[:, :1], attention_mask.new_ones(batch, count), attention_mask[:, 1:]],
                         dim=1)
        mask = create_bidirectional_mask(config=self.text_model.config, inputs_embeds=hidden,
                                         attention_mask=mask.bool())
        return self.text_model.encoder(hidden, attention_mask=mask).last_hidden_state

    def _fit_fused_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cut texts longer than the positions left beside ``count`` image tokens, keeping each cut row's
        final token (``[SEP]``) as the tokenizer's truncation does; shorter rows only lose padding."""
        limit = int(self.config.text_config.max_position_embeddings) - count
        if input_ids.shape[1] <= limit:
            return input_ids, attention_mask
        if limit < 2:
            raise ValueError(f"VistaModel: {count} image tokens leave {limit} of the text encoder's "
                             f"{self.config.text_config.max_position_embeddings} positions for the text")
        lengths = attention_mask.sum(dim=1)
        cut = lengths > limit
        if cut.any() and not self._warned_truncation:
            logger.warning("VistaModel: fused texts longer than %d tokens are truncated (the text encoder's %d "
                           "positions minus %d image tokens); tokenize with max_length=%d", limit,
                           self.config.text_config.max_position_embeddings, count, limit)
            self._warned_truncation = True
        ids, mask = input_ids[:, :limit].clone(), attention_mask[:, :limit]
        final = input_ids.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)
        ids[cut, limit - 1] = final[cut]
        return ids, mask

    def _image_only_ids(self, batch: int, device: torch.device) -> torch.Tensor:
        ids = self.config.image_only_input_ids
        if not ids:
            raise ValueError("VistaConfig.image_only_input_ids is unset: set it to the tokenizer's ids of '' "
                             "(tokenizer('')['input_ids'], e.g. [CLS, SEP]); gcl-hf convert-vista does")
        return torch.tensor(ids, dtype=torch.long, device=device).expand(batch, -1)

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs: Any) -> BaseModelOutputWithPooling:
        """``pooler_output`` = the raw ``[CLS]`` state of the image with the empty prompt, ``[N, hidden]``."""
        tokens = self.image_tokens(pixel_values)
        return _pooled(self.encode_with_image_tokens(tokens, self._image_only_ids(tokens.shape[0], tokens.device)))

    def get_fused_features(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                           attention_mask: torch.Tensor | None = None, **kwargs: Any) -> BaseModelOutputWithPooling:
        """``pooler_output`` = the raw ``[CLS]`` state of image n with text n, ``[N, hidden]``."""
        return _pooled(self.encode_with_image_tokens(self.image_tokens(pixel_values), input_ids, attention_mask))

    def get_image_text_fused_features(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(image, text, fused)`` raw features of N image–text pairs with one ViT pass per image: the image and
        fused embeddings share the image tokens; the fused one costs one text-encoder pass."""
        tokens = self.image_tokens(pixel_values)
        image = self.encode_with_image_tokens(tokens, self._image_only_ids(tokens.shape[0], tokens.device))[:, 0]
        text = self.get_text_features(input_ids, attention_mask, kwargs.get("token_type_ids")).pooler_output
        fused = self.encode_with_image_tokens(tokens, input_ids, attention_mask)[:, 0]
        return image, text, fused

    def forward(self, input_ids: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, **kwargs: Any) -> VistaOutput:
        """Raw embeddings of what is given: texts, images, and (both given, one per image) fused items."""
        if input_ids is not None and pixel_values is not None:
            image, text, fused = self.get_image_text_fused_features(pixel_values, input_ids, attention_mask)
            return VistaOutput(text_embeds=text, image_embeds=image, fused_embeds=fused)
        if pixel_values is not None:
            return VistaOutput(image_embeds=self.get_image_features(pixel_values).pooler_output)
        if input_ids is not None:
            return VistaOutput(text_embeds=self.get_text_features(input_ids, attention_mask).pooler_output)
        raise ValueError("VistaModel.forward needs input_ids, pixel_values or both")


def _pooled(sequence: torch.Tensor) -> BaseModelOutputWithPooling:
    return BaseModelOutputWithPooling(last_hidden_state=sequence, pooler_output=sequence[:, 0])
