"""Tiny random backbones of every CLIP-like family transformers ships, each with its *real* processor class
(the family's image processor and a tokenizer of the family's class built offline from a small vocabulary).

Sizes: hidden 32, one layer, 32 px images; every backbone is deterministic for its family.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import transformers as tf
from tokenizers import pre_tokenizers

HIDDEN, IMAGE, PATCH, TEXT_LEN = 32, 32, 8, 64
WORDS = ["a", "red", "blue", "green", "square", "dog", "cat", "two", "on", "the", "field", "photo", "of", "very",
         "long", "caption", "circle", "and"]


# ------------------------------------------------------------------ tokenizers (offline, family classes)
def _byte_vocab(*specials: str) -> dict[str, int]:
    vocab = {s: i for i, s in enumerate(specials)}
    for tok in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(tok, len(vocab))
    return vocab


def clip_tokenizer() -> Any:
    """`CLIPTokenizer`: byte-level BPE without merges (every string tokenizes, 259 tokens)."""
    bos, eos = "<|startoftext|>", "<|endoftext|>"
    vocab = _byte_vocab(bos, eos)
    for tok in list(vocab):  # CLIP's word-end marker: every byte may end a word
        if tok not in (bos, eos):
            vocab.setdefault(tok + "</w>", len(vocab))
    return tf.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=TEXT_LEN)


def gemma_tokenizer() -> Any:
    """`GemmaTokenizer` (SigLIP 2's): BPE over characters and a few words, byte fallback for the rest."""
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    vocab = {s: i for i, s in enumerate(specials)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for ch in ["▁", *string.ascii_lowercase]:
        vocab.setdefault(ch, len(vocab))
    return tf.GemmaTokenizer(vocab=vocab, merges=[], model_max_length=TEXT_LEN)


def xlmr_tokenizer() -> Any:
    """`XLMRobertaTokenizer` (MetaCLIP 2's, AltCLIP's): a unigram vocabulary of letters and a few words."""
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(f"▁{w}", -2.0) for w in WORDS] + [("▁", -3.0)]
    vocab += [(ch, -5.0) for ch in string.ascii_letters + string.digits + string.punctuation]
    vocab += [("<mask>", 0.0)]
    return tf.XLMRobertaTokenizer(vocab=vocab, model_max_length=TEXT_LEN)


def bert_tokenizer() -> Any:
    """`BertTokenizer` (ChineseCLIP's, ALIGN's, BLIP's): WordPiece over a few words and every letter."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    vocab += list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab += [f"##{ch}" for ch in string.ascii_lowercase + string.digits]
    return tf.BertTokenizer(vocab={t: i for i, t in enumerate(dict.fromkeys(vocab))}, model_max_length=TEXT_LEN)


# ------------------------------------------------------------------ configs
def _text(tokenizer: Any, **extra: Any) -> dict[str, Any]:
    ids = {k: getattr(tokenizer, f"{k}_token_id") for k in ("bos", "eos", "pad")}
    return {**dict(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=1,
                   num_attention_heads=2, max_position_embeddings=TEXT_LEN),
            **{f"{k}_token_id": v for k, v in ids.items() if v is not None}, **extra}


def _vision(**extra: Any) -> dict[str, Any]:
    return {**dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=1, num_attention_heads=2,
                   image_size=IMAGE, patch_size=PATCH), **extra}


def _clip_image_processor(cls: type = tf.CLIPImageProcessorPil, **kwargs: Any) -> Any:
    return cls(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}, **kwargs)


def _fixed_image_processor(cls: type, **kwargs: Any) -> Any:
    return cls(size={"height": IMAGE, "width": IMAGE}, **kwargs)


@dataclass(frozen=True)
class FamilyCase:
    """One family under test: a tiny backbone and its processor (each call builds fresh ones)."""

    name: str
    model_type: str
    make_backbone: Callable[[], Any]
    make_processor: Callable[[], Any]

    def __repr__(self) -> str:
        return self.name


def _seeded(build: Callable[[], Any]) -> Callable[[], Any]:
    def make() -> Any:
        torch.manual_seed(0)
        return build().eval()

    return make


def _clip() -> Any:
    tok = clip_tokenizer()
    return tf.CLIPModel(tf.CLIPConfig(text_config=_text(tok), vision_config=_vision(), projection_dim=HIDDEN))


def _clip_processor() -> Any:
    return tf.CLIPProcessor(image_processor=_clip_image_processor(), tokenizer=clip_tokenizer())


def _tinyclip() -> Any:
    """TinyCLIP checkpoints are `CLIPModel`s with narrow towers whose widths differ from the projection."""
    tok = clip_tokenizer()
    return tf.CLIPModel(tf.CLIPConfig(text_config=_text(tok, hidden_size=24), vision_config=_vision(hidden_size=40),
                                      projection_dim=16))


def _siglip() -> Any:
    tok = gemma_tokenizer()
    return tf.SiglipModel(tf.SiglipConfig(text_config=_text(tok), vision_config=_vision()))


def _siglip_processor() -> Any:
    # SigLIP's own tokenizer (SiglipTokenizer) needs sentencepiece, which gcl-hf does not install; the Gemma
    # tokenizer SigLIP 2 ships is the tokenizers-backed stand-in.
    return tf.SiglipProcessor(image_processor=_fixed_image_processor(tf.SiglipImageProcessorPil),
                              tokenizer=gemma_tokenizer())


def _siglip2() -> Any:
    tok = gemma_tokenizer()
    # the processor's own defaults (16 px patches, at most 256 of them) apply at every call: the tower matches
    vision = _vision(num_patches=256, patch_size=16)
    vision.pop("image_size")
    return tf.Siglip2Model(tf.Siglip2Config(text_config=_text(tok), vision_config=vision))


def _siglip2_processor() -> Any:
    return tf.Siglip2Processor(image_processor=tf.Siglip2ImageProcessorPil(patch_size=16, max_num_patches=256),
                               tokenizer=gemma_tokenizer())


def _siglip2_fixed() -> Any:
    """A fixed-resolution SigLIP 2 checkpoint (``google/siglip2-base-patch16-224``) is a `SiglipModel`."""
    tok = gemma_tokenizer()
    return tf.SiglipModel(tf.SiglipConfig(text_config=_text(tok), vision_config=_vision()))


def _metaclip2() -> Any:
    tok = xlmr_tokenizer()
    return tf.MetaClip2Model(tf.MetaClip2Config(text_config=_text(tok), vision_config=_vision(),
                                                projection_dim=HIDDEN))


def _metaclip2_processor() -> Any:
    return tf.CLIPProcessor(image_processor=_clip_image_processor(), tokenizer=xlmr_tokenizer())


def _altclip() -> Any:
    tok = xlmr_tokenizer()
    text = _text(tok, project_dim=HIDDEN, type_vocab_size=1)
    text["max_position_embeddings"] = TEXT_LEN + 2  # XLM-R positions start after the padding index
    return tf.AltCLIPModel(tf.AltCLIPConfig(text_config=text, vision_config=_vision(), projection_dim=HIDDEN))


def _altclip_processor() -> Any:
    return tf.AltCLIPProcessor(image_processor=_clip_image_processor(), tokenizer=xlmr_tokenizer())


def _chinese_clip() -> Any:
    tok = bert_tokenizer()
    return tf.ChineseCLIPModel(tf.ChineseCLIPConfig(text_config=_text(tok), vision_config=_vision(),
                                                    projection_dim=HIDDEN))


def _chinese_clip_processor() -> Any:
    return tf.ChineseCLIPProcessor(image_processor=_clip_image_processor(tf.ChineseCLIPImageProcessorPil),
                                   tokenizer=bert_tokenizer())


def _align() -> Any:
    tok = bert_tokenizer()
    vision = dict(image_size=IMAGE, width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=HIDDEN,
                  num_hidden_layers=1)
    return tf.AlignModel(tf.AlignConfig(text_config=_text(tok), vision_config=vision, projection_dim=HIDDEN))


def _align_processor() -> Any:
    return tf.AlignProcessor(image_processor=_fixed_image_processor(tf.EfficientNetImageProcessorPil,
                                                                    crop_size={"height": IMAGE, "width": IMAGE}),
                             tokenizer=bert_tokenizer())


def _blip() -> Any:
    tok = bert_tokenizer()
    text = _text(tok)
    return tf.BlipModel(tf.BlipConfig(text_config=text, vision_config=_vision(), projection_dim=HIDDEN))


def _blip_processor() -> Any:
    return tf.BlipProcessor(image_processor=_fixed_image_processor(tf.BlipImageProcessorPil),
                            tokenizer=bert_tokenizer())


def _aimv2() -> Any:
    tok = clip_tokenizer()
    return tf.Aimv2Model(tf.Aimv2Config(text_config=_text(tok), vision_config=_vision(), projection_dim=HIDDEN))


def _clipseg() -> Any:
    tok = clip_tokenizer()
    return tf.CLIPSegModel(tf.CLIPSegConfig(text_config=_text(tok), vision_config=_vision(), projection_dim=HIDDEN,
                                            extract_layers=[0], reduce_dim=16))


def _clipseg_processor() -> Any:
    return tf.CLIPSegProcessor(image_processor=_fixed_image_processor(tf.ViTImageProcessorPil),
                               tokenizer=clip_tokenizer())


def _groupvit() -> Any:
    tok = clip_tokenizer()
    vision = dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_attention_heads=2, image_size=IMAGE,
                  patch_size=PATCH, depths=[1, 1], num_group_tokens=[4, 0], num_output_groups=[4, 2])
    return tf.GroupViTModel(tf.GroupViTConfig(text_config=_text(tok), vision_config=vision, projection_dim=HIDDEN,
                                              projection_intermediate_dim=HIDDEN))


def _vista() -> Any:
    from gcl_hf.modeling.vista import VistaConfig, VistaModel

    tok = bert_tokenizer()
    text = {**_text(tok), "model_type": "bert"}
    vision = _vision(rope_pretrain_grid=IMAGE // PATCH)
    return VistaModel(VistaConfig(text_config=text, vision_config=vision, image_only_input_ids=tok("")["input_ids"]))


def _vista_processor() -> Any:
    from gcl_hf.modeling.vista import VistaImageProcessor, VistaProcessor

    image_processor = VistaImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE})
    return VistaProcessor(image_processor=image_processor, tokenizer=bert_tokenizer())


CASES: tuple[FamilyCase, ...] = (
    FamilyCase("clip", "clip", _seeded(_clip), _clip_processor),
    FamilyCase("tinyclip", "clip", _seeded(_tinyclip), _clip_processor),
    FamilyCase("siglip", "siglip", _seeded(_siglip), _siglip_processor),
    FamilyCase("siglip2-naflex", "siglip2", _seeded(_siglip2), _siglip2_processor),
    FamilyCase("siglip2-fixed", "siglip", _seeded(_siglip2_fixed), _siglip_processor),
    FamilyCase("metaclip2", "metaclip_2", _seeded(_metaclip2), _metaclip2_processor),
    FamilyCase("altclip", "altclip", _seeded(_altclip), _altclip_processor),
    FamilyCase("chinese_clip", "chinese_clip", _seeded(_chinese_clip), _chinese_clip_processor),
    FamilyCase("align", "align", _seeded(_align), _align_processor),
    FamilyCase("blip", "blip", _seeded(_blip), _blip_processor),
    FamilyCase("aimv2", "aimv2", _seeded(_aimv2), _clip_processor),
    FamilyCase("clipseg", "clipseg", _seeded(_clipseg), _clipseg_processor),
    FamilyCase("groupvit", "groupvit", _seeded(_groupvit), _clip_processor),
    FamilyCase("vista", "vista", _seeded(_vista), _vista_processor),
)
