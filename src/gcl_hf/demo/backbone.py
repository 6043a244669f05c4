"""The demo's tiny CLIP-like backbone, its word-level tokenizer and its processor.

The tokenizer's vocabulary is every word a demo caption can contain (:func:`caption_vocabulary`),
so captions never hit ``<|unk|>`` and sequences stay short. The backbone is a plain
``transformers.CLIPModel`` from a small config: it trains at batch 128 on two CPU cores in a
fraction of a second per step, and any code that handles CLIP handles it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import CLIPConfig, CLIPModel, CLIPProcessor, PreTrainedTokenizerFast

from gcl_hf.demo.config import DemoBackboneConfig, demo_max_length
from gcl_hf.demo.items import caption_vocabulary

PAD, UNK, BOS, EOS = "<|pad|>", "<|unk|>", "<|startoftext|>", "<|endoftext|>"


def _image_processor(image_size: int) -> Any:
    """CLIP's image processor at ``image_size`` (resize the shortest edge, centre crop); the PIL flavour where
    transformers has one, so preprocessing needs no torchvision."""
    try:
        from transformers import CLIPImageProcessorPil as image_processor_class
    except ImportError:  # transformers without the separate PIL class
        from transformers import CLIPImageProcessor as image_processor_class
    return image_processor_class(size={"shortest_edge": image_size},
                                 crop_size={"height": image_size, "width": image_size})


def build_demo_tokenizer(vocabulary: Sequence[str] | None = None, max_length: int | None = None) -> PreTrainedTokenizerFast:
    """A word-level tokenizer (``Whitespace`` pre-tokenizer, ``<|startoftext|> … <|endoftext|>``
    template) over ``vocabulary`` (default: :func:`caption_vocabulary`). Ids: pad 0, unk 1,
    bos 2, eos 3, then the words — EOS is deliberately not 2 (CLIP's legacy argmax pooling)."""
    words = list(caption_vocabulary() if vocabulary is None else vocabulary)
    vocab = {PAD: 0, UNK: 1, BOS: 2, EOS: 3}
    for word in words:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        model_max_length=max_length or demo_max_length(),
    )


def build_demo_processor(tokenizer: PreTrainedTokenizerFast | None = None, image_size: int = 48) -> CLIPProcessor:
    """A ``CLIPProcessor``: CLIP image preprocessing at ``image_size`` px + the demo tokenizer."""
    return CLIPProcessor(image_processor=_image_processor(image_size), tokenizer=tokenizer or build_demo_tokenizer())


def demo_clip_config(tokenizer: PreTrainedTokenizerFast, config: DemoBackboneConfig | None = None) -> CLIPConfig:
    """The ``CLIPConfig`` of the demo backbone, with the tokenizer's vocabulary and special ids."""
    c = config or DemoBackboneConfig()
    common = {"hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
              "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads}
    text = dict(common, vocab_size=len(tokenizer), max_position_embeddings=c.max_length,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    vision = dict(common, image_size=c.image_size, patch_size=c.patch_size)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=c.projection_dim)


def build_demo_backbone(tokenizer: PreTrainedTokenizerFast | None = None, seed: int = 0,
                        config: DemoBackboneConfig | None = None) -> CLIPModel:
    """A randomly initialised demo ``CLIPModel`` (deterministic for ``seed``), in train mode."""
    tokenizer = tokenizer or build_demo_tokenizer()
    clip_config = demo_clip_config(tokenizer, config)
    torch.manual_seed(seed)
    return CLIPModel(clip_config)


def normalize_pixels(stacked: torch.Tensor, processor: CLIPProcessor) -> torch.Tensor:
    """Rescale and normalise ``[N, H, W, 3]`` uint8 pixels as ``processor``'s image processor does (no resize
    or crop: the images must already have its crop size) → ``[N, 3, H, W]`` float32."""
    ip = processor.image_processor
    crop = (ip.crop_size["height"], ip.crop_size["width"])
    if stacked.ndim != 4 or tuple(stacked.shape[1:3]) != crop or stacked.shape[3] != 3:
        raise ValueError(f"normalize_pixels expects [N, {crop[0]}, {crop[1]}, 3] pixels, got {tuple(stacked.shape)}")
    scale = torch.full((3,), float(ip.rescale_factor) if ip.do_rescale else 1.0)
    shift = torch.zeros(3)
    if ip.do_normalize:
        std = torch.tensor(ip.image_std, dtype=torch.float32)
        scale, shift = scale / std, -torch.tensor(ip.image_mean, dtype=torch.float32) / std
    return torch.addcmul(shift, stacked.float(), scale).permute(0, 3, 1, 2).contiguous()


def pixel_values(images: Sequence, processor: CLIPProcessor) -> torch.Tensor:
    """``processor(images=images).pixel_values`` for the demo's images, vectorised.

    Scene images already have the processor's crop size, so resizing and cropping are no-ops and
    preprocessing is just rescale + normalise: done here on one stacked array (tens of times
    faster than the per-image PIL path). Images of another size or mode go through the processor.
    """
    ip = processor.image_processor
    crop = (ip.crop_size["height"], ip.crop_size["width"])
    if not images or any(getattr(im, "mode", None) != "RGB" or im.size[::-1] != crop for im in images):
        return processor(images=list(images), return_tensors="pt")["pixel_values"]
    return normalize_pixels(torch.from_numpy(np.stack([np.asarray(im) for im in images])), processor)
