"""A tiny, offline VISTA for tests, examples and benchmarks: a WordPiece tokenizer over printable ASCII, a tiny
BERT text encoder and a tiny EVA02 tower (deterministic for a seed). Nothing here touches the Hub."""

from __future__ import annotations

import string
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from gcl_hf.modeling.vista.configuration_vista import VistaConfig
from gcl_hf.modeling.vista.image_processing_vista import VistaImageProcessor, VistaProcessor
from gcl_hf.modeling.vista.modeling_vista import VistaModel

__all__ = ["tiny_vista", "tiny_vista_config", "tiny_vista_processor", "wordpiece_tokenizer"]

def wordpiece_tokenizer(model_max_length: int = 64) -> PreTrainedTokenizerFast:
    """A BERT-style WordPiece tokenizer over printable ASCII characters (``[CLS] text [SEP]``), offline."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    vocab = {tok: i for i, tok in enumerate(specials + chars + [f"##{c}" for c in chars])}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                                   cls_token="[CLS]", mask_token="[MASK]", model_max_length=model_max_length)


def tiny_vista_config(hidden: int = 32, layers: int = 2, image_size: int = 32, patch_size: int = 8,
                      vision_hidden: int = 32, max_positions: int = 64, text_model_type: str = "bert") -> Any:
    """A `VistaConfig` with a tiny BERT (or XLM-R) text encoder and a tiny EVA02 tower."""
    tokenizer = wordpiece_tokenizer()
    text = dict(model_type=text_model_type, vocab_size=len(tokenizer), hidden_size=hidden,
                intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=2,
                max_position_embeddings=max_positions, pad_token_id=tokenizer.pad_token_id,
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    vision = dict(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden, num_hidden_layers=layers,
                  num_attention_heads=2, image_size=image_size, patch_size=patch_size,
                  rope_pretrain_grid=image_size // patch_size)
    return VistaConfig(text_config=text, vision_config=vision, image_only_input_ids=tokenizer("")["input_ids"])


def tiny_vista(seed: int = 0, **config_kwargs: Any) -> Any:
    """A randomly initialised tiny `VistaModel` (deterministic for a seed), in eval mode."""
    config = tiny_vista_config(**config_kwargs)
    torch.manual_seed(seed)
    return VistaModel(config).eval()


def tiny_vista_processor(image_size: int = 32, max_length: int = 64) -> Any:
    """A `VistaProcessor`: the WordPiece tokenizer + VISTA's image preprocessing at ``image_size``."""
    image_processor = VistaImageProcessor(size={"shortest_edge": image_size},
                                          crop_size={"height": image_size, "width": image_size})
    return VistaProcessor(image_processor=image_processor, tokenizer=wordpiece_tokenizer(max_length))
