"""`VistaConfig`: VISTA (Visualized BGE) = a BGE text encoder whose input can carry EVA02-CLIP image tokens.

The text sub-config is any `AutoConfig` text encoder (``bert`` for bge-base-en-v1.5, ``xlm-roberta`` for
bge-m3); the vision sub-config is an `Eva02VisionConfig` (EVA02-CLIP-B/16: 768 wide, 12 blocks, 224 px; L/14:
1024 wide, 24 blocks).
"""

from __future__ import annotations

import math

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

__all__ = ["Eva02VisionConfig", "VISTA_TEMPERATURE", "VistaConfig"]

#: VISTA's training temperature (logits = cosine / 0.02, a logit scale of 50).
VISTA_TEMPERATURE = 0.02


@strict
class Eva02VisionConfig(PreTrainedConfig):
    r"""EVA02 vision transformer: pre-norm blocks with 2-D rotary position embeddings on the patch tokens, a
    SwiGLU MLP and sub-LayerNorms (after attention, inside the MLP); q/v biases, no k bias.

    Args:
        hidden_size (`int`, defaults to 768): width of the blocks.
        intermediate_size (`int`, defaults to 2048): SwiGLU hidden width (``int(width * 2.6667)`` in EVA02-CLIP).
        num_hidden_layers (`int`, defaults to 12), num_attention_heads (`int`, defaults to 12).
        image_size (`int`, defaults to 224), patch_size (`int`, defaults to 16), num_channels (`int`, defaults to 3).
        layer_norm_eps (`float`, defaults to 1e-6).
        rope_pretrain_grid (`int`, defaults to 16): the patch grid the rotary frequencies were trained on; a
            different grid is interpolated to it (EVA02-CLIP's ``pt_hw_seq_len`` with ``intp_freq``).
        rope_theta (`float`, defaults to 10000.0).
        patch_dropout (`float`, defaults to 0.0): fraction of patch tokens dropped at random in train mode only
            (EVA02-CLIP-B/16 was pre-trained with 0.5); eval mode never drops.
        attention_dropout (`float`, defaults to 0.0).
        initializer_range (`float`, defaults to 0.02).
    """

    model_type = "vista_vision_model"
    base_config_key = "vision_config"

    hidden_size: int = 768
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    layer_norm_eps: float = 1e-6
    rope_pretrain_grid: int = 16
    rope_theta: float = 10000.0
    patch_dropout: float = 0.0
    attention_dropout: float = 0.0
    initializer_range: float = 0.02

    def validate_architecture(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"Eva02VisionConfig: hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if (self.hidden_size // self.num_attention_heads) % 4:
            raise ValueError("Eva02VisionConfig: the head size must be a multiple of 4 (2-D rotary embedding)")
        if self.image_size % self.patch_size:
            raise ValueError(f"Eva02VisionConfig: image_size {self.image_size} is not a multiple of "
                             f"patch_size {self.patch_size}")
        if not 0.0 <= self.patch_dropout < 1.0:
            raise ValueError(f"Eva02VisionConfig.patch_dropout={self.patch_dropout}: must be in [0, 1)")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@strict
class VistaConfig(PreTrainedConfig):
    r"""Configuration of a [`VistaModel`].

    Args:
        text_config (`dict` or `PreTrainedConfig`): the BGE text encoder's config (``bert`` or ``xlm-roberta``).
        vision_config (`dict` or `Eva02VisionConfig`): the EVA02 vision tower's config.
        image_only_input_ids (`list[int]`): the text encoder's tokenization of ``""`` (``[CLS, SEP]``): the
            prompt of an image-only item. Taken from the tokenizer by the converter, never assumed.
        logit_scale_init (`float`, defaults to `log(1 / 0.02)`): VISTA's training temperature as a log logit
            scale; `GCLModel.from_backbone` starts its temperature there unless told otherwise.
    """

    model_type = "vista"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert"),
        "vision_config": Eva02VisionConfig,
    }

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | Eva02VisionConfig | None = None
    image_only_input_ids: list | None = None
    logit_scale_init: float = math.log(1 / VISTA_TEMPERATURE)

    def validate_architecture(self):
        if self.image_only_input_ids is not None and len(self.image_only_input_ids) < 1:
            raise ValueError("VistaConfig.image_only_input_ids: expected the tokenizer's ids of '' ([CLS, SEP])")

    @property
    def num_image_tokens(self) -> int:
        """P: image tokens in the text encoder's input (the ViT's patch tokens)."""
        return self.vision_config.num_patches

    @property
    def max_fused_text_length(self) -> int:
        """The longest text (in tokens, specials included) a fused item may have: text tokens take positions 0
        and P+1..P+T-1 of the text encoder's ``max_position_embeddings``."""
        return int(self.text_config.max_position_embeddings) - self.num_image_tokens
