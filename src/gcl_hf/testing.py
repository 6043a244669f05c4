"""Tiny, deterministic, offline backbones and processors for tests, examples and the demo.

Nothing here touches the Hub: the tokenizer is a byte-level BPE with no merges (any text
tokenizes, vocabulary = 256 bytes + specials) and the models are built from small configs.
"""

from __future__ import annotations

from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPProcessor,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipModel,
)

BOS, EOS, PAD = "<|startoftext|>", "<|endoftext|>", "<|pad|>"


def byte_level_tokenizer(model_max_length: int = 32) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with an empty merge list: offline, covers every string."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(sorted(alphabet))}
    for special in (BOS, EOS, PAD):
        vocab[special] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=model_max_length,
    )


try:  # transformers 5: the PIL backend by name (we never pull torchvision)
    from transformers import CLIPImageProcessorPil as _ImageProcessor
except ImportError:  # pragma: no cover - older transformers
    from transformers import CLIPImageProcessor as _ImageProcessor


def tiny_image_processor(image_size: int = 32) -> _ImageProcessor:
    return _ImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )


def tiny_processor(image_size: int = 32, max_length: int = 32) -> CLIPProcessor:
    """A CLIP processor (image processor + byte-level tokenizer) sized for tiny backbones."""
    return CLIPProcessor(
        image_processor=tiny_image_processor(image_size), tokenizer=byte_level_tokenizer(max_length)
    )


def _text_kwargs(tokenizer: PreTrainedTokenizerFast, hidden: int, layers: int, max_length: int) -> dict[str, Any]:
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        max_position_embeddings=max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _vision_kwargs(hidden: int, layers: int, image_size: int, patch_size: int) -> dict[str, Any]:
    return dict(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
    )


def tiny_clip_config(
    hidden: int = 32,
    projection_dim: int = 32,
    layers: int = 2,
    image_size: int = 32,
    patch_size: int = 8,
    max_length: int = 32,
) -> CLIPConfig:
    tokenizer = byte_level_tokenizer(max_length)
    return CLIPConfig(
        text_config=_text_kwargs(tokenizer, hidden, layers, max_length),
        vision_config=_vision_kwargs(hidden, layers, image_size, patch_size),
        projection_dim=projection_dim,
    )


def tiny_clip(seed: int = 0, **config_kwargs: Any) -> CLIPModel:
    """A randomly initialised tiny `CLIPModel` (deterministic for a seed)."""
    torch.manual_seed(seed)
    return CLIPModel(tiny_clip_config(**config_kwargs)).eval()


def tiny_siglip(seed: int = 0, hidden: int = 32, layers: int = 2, image_size: int = 32,
                patch_size: int = 8, max_length: int = 32) -> SiglipModel:
    """A randomly initialised tiny `SiglipModel` (deterministic for a seed)."""
    tokenizer = byte_level_tokenizer(max_length)
    config = SiglipConfig(
        text_config=_text_kwargs(tokenizer, hidden, layers, max_length),
        vision_config=_vision_kwargs(hidden, layers, image_size, patch_size),
    )
    torch.manual_seed(seed)
    return SiglipModel(config).eval()
