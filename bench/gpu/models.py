"""The suite's backbones at their real sizes (from configs, random weights: no Hub) and synthetic batches.

Each :class:`Case` builds a fresh backbone and knows its token layout, so that a batch looks like the
collator's output for that model: CLIP-style captions ``BOS … EOS`` padded to the batch's longest (the text
tower pools at EOS), SigLIP-style captions padded to the fixed 64 tokens the tower was trained with (it pools
the last position). ``--dry-run`` uses the same cases at tiny sizes.

VISTA: :func:`vista_case` activates by itself once ``gcl_hf.modeling.vista`` (``VistaConfig`` /
``VistaModel``) is importable; until then the suite writes a ``skipped`` line naming the import error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from common import ModelSpec

#: mean caption length in tokens (BOS and EOS included), as in CC3M/LAION captions
CAPTION_TOKENS = 20


@dataclass(frozen=True)
class Case:
    """A backbone of the suite: ``build()`` returns a fresh randomly initialised backbone (CPU, train mode)."""

    name: str
    label: str
    build: Callable[[], Any]
    image_size: int
    max_length: int
    token_ids: tuple[int, int, int]  # BOS, EOS, PAD
    token_range: tuple[int, int]  # ordinary tokens are drawn from [low, high)
    fixed_padding: bool = False  # SigLIP: pad every caption to max_length
    spec: ModelSpec | None = None  # CLIP cases: the `bench/common.py` spec they come from

    def gcl_model(self, device: torch.device, seed: int = 0, **overrides: Any) -> Any:
        import transformers

        from gcl_hf import GCLModel

        transformers.logging.set_verbosity_error()
        torch.manual_seed(seed)
        with torch.device(device):  # initialise on the device: seconds less per model on a GPU
            return GCLModel.from_backbone(self.build(), **overrides).to(device).train()


@dataclass(frozen=True)
class Unavailable:
    """A case that cannot be built here, and why (written as a ``skipped`` line)."""

    name: str
    label: str
    reason: str


def clip_case(name: str, label: str, spec: ModelSpec) -> Case:
    """A CLIPModel case from a `bench/common.py` ModelSpec (TinyCLIP checkpoints are CLIPModels too)."""
    from transformers import CLIPModel

    bos, eos, pad = spec.token_ids
    top = min([spec.vocab_size] + [t for t in spec.token_ids if t >= 3])
    return Case(name, label, lambda: CLIPModel(spec.clip_config()), spec.image_size, spec.max_length,
                spec.token_ids, (3, top), spec=spec)


def siglip_case(name: str, label: str, *, hidden: int, layers: int, heads: int, vocab: int, image_size: int,
                patch_size: int, max_length: int = 64) -> Case:
    """A SiglipModel case (SigLIP 2's fixed-resolution checkpoints are ``SiglipModel`` with a Gemma vocabulary:
    PAD 0, EOS 1, BOS 2)."""
    from transformers import SiglipConfig, SiglipModel

    def build() -> Any:
        text = {"vocab_size": vocab, "hidden_size": hidden, "intermediate_size": 4 * hidden,
                "num_hidden_layers": layers, "num_attention_heads": heads, "max_position_embeddings": max_length,
                "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}
        vision = {"hidden_size": hidden, "intermediate_size": 4 * hidden, "num_hidden_layers": layers,
                  "num_attention_heads": heads, "image_size": image_size, "patch_size": patch_size}
        return SiglipModel(SiglipConfig(text_config=text, vision_config=vision))

    return Case(name, label, build, image_size, max_length, (2, 1, 0), (3, vocab), fixed_padding=True)


def vista_case(dry_run: bool) -> Case | Unavailable:
    """VISTA base (BGE-base text encoder + EVA02-CLIP-B/16 image tokens) if ``gcl_hf.modeling.vista`` exists."""
    label = "VISTA base (bge-base-en-v1.5 + EVA02-CLIP-B/16)"
    try:
        from gcl_hf.modeling.vista import VistaConfig, VistaModel
    except ImportError as exc:
        return Unavailable("vista-base", label, f"gcl_hf.modeling.vista is not importable (the VISTA issue has not "
                           f"landed): {type(exc).__name__}: {exc}")
    cls_id, sep_id, pad_id = 101, 102, 0  # BERT's [CLS], [SEP], [PAD]
    if dry_run:
        vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "image_size": 32, "patch_size": 8, "rope_pretrain_grid": 4}
        text = {"model_type": "bert", "vocab_size": 1024, "hidden_size": 32, "intermediate_size": 64,
                "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 64}
    else:  # bge-base-en-v1.5 is bert-base (30,522 tokens, 768 x 12, 512 positions); EVA02-CLIP-B/16's defaults
        vision = {}
        text = {"model_type": "bert"}
    try:
        config = VistaConfig(text_config=text, vision_config=vision, image_only_input_ids=[cls_id, sep_id])
        max_length = int(config.max_fused_text_length) if hasattr(config, "max_fused_text_length") else 32
    except Exception as exc:  # noqa: BLE001 - the suite goes on; the dry-run test fails on this line
        return Unavailable("vista-base", label, f"gcl_hf.modeling.vista is importable but its VISTA-base config "
                           f"failed: {type(exc).__name__}: {exc}")
    return Case("vista-base", label, lambda: VistaModel(config), int(config.vision_config.image_size),
                min(max_length, 77), (cls_id, sep_id, pad_id), (1000 if not dry_run else 103,
                                                                int(config.text_config.vocab_size)))


def cases(dry_run: bool, token_ids: tuple[int, int, int] | None = None) -> dict[str, Case | Unavailable]:
    """The suite's backbones by name (``token_ids`` overrides the CLIP cases' BOS/EOS/PAD, e.g. a tokenizer's)."""

    def clip_spec(spec: ModelSpec) -> ModelSpec:
        return dataclasses.replace(spec, token_ids=token_ids) if token_ids else spec

    if dry_run:
        tiny = ModelSpec.tiny()
        out: dict[str, Case | Unavailable] = {
            "vit-b32": clip_case("vit-b32", "CLIP ViT-B/32 (dry run: tiny)", clip_spec(tiny)),
            "tinyclip-8m-16": clip_case("tinyclip-8m-16", "TinyCLIP-8M/16 (dry run: tiny)",
                                        clip_spec(dataclasses.replace(tiny, layers=3, text_layers=1))),
            "siglip2-base": siglip_case("siglip2-base", "SigLIP 2 base (dry run: tiny)", hidden=32, layers=2,
                                        heads=2, vocab=1024, image_size=32, patch_size=8, max_length=16),
        }
    else:
        out = {
            "vit-b32": clip_case("vit-b32", "CLIP ViT-B/32 (CLIPConfig() sizes, 151M parameters)",
                                 clip_spec(ModelSpec.vit_b32())),
            # wkcn/TinyCLIP-ViT-8M-16-Text-3M-YFCC15M: vision 256 x 10 layers, patch 16 at 224 px; text 256 x 3
            "tinyclip-8m-16": clip_case("tinyclip-8m-16", "TinyCLIP-8M/16 (ViT-8M-16-Text-3M sizes)", clip_spec(
                ModelSpec(hidden=256, layers=10, heads=4, image_size=224, patch_size=16, projection_dim=512,
                          text_hidden=256, text_layers=3, text_heads=4))),
            # google/siglip2-base-patch16-224: SiglipModel, 768 x 12 both towers, Gemma vocabulary of 256k tokens
            "siglip2-base": siglip_case("siglip2-base", "SigLIP 2 base/16 at 224 px (375M parameters)", hidden=768,
                                        layers=12, heads=12, vocab=256_000, image_size=224, patch_size=16),
        }
    out["vista-base"] = vista_case(dry_run)
    return out


def make_batch(case: Case, n: int, device: torch.device, *, seed: int = 0, pad_to: int | None = None,
               mean_tokens: int | None = None) -> dict[str, torch.Tensor]:
    """A collated batch made on ``device``: normal pixels and captions of varied length (mean ``mean_tokens``,
    BOS … EOS), padded to the batch's longest, to ``pad_to``, or (SigLIP) to ``max_length``."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    mean = min(mean_tokens or CAPTION_TOKENS, case.max_length)
    low = max(3, mean // 2)
    high = min(case.max_length, 2 * mean - low)
    lengths = torch.randint(low, high + 1, (n,), generator=g)
    width = case.max_length if case.fixed_padding else (pad_to or int(lengths.max()))
    bos, eos, pad = case.token_ids
    ids = torch.randint(case.token_range[0], case.token_range[1], (n, width), generator=g)
    pos = torch.arange(width).expand(n, width)
    ids[:, 0] = bos
    ids[pos == (lengths - 1)[:, None]] = eos
    mask = (pos < lengths[:, None]).long()
    ids[mask == 0] = pad
    pixels = torch.randn(n, 3, case.image_size, case.image_size, device=device,
                         generator=torch.Generator(device=device).manual_seed(seed))
    return {"pixel_values": pixels, "input_ids": ids.to(device), "attention_mask": mask.to(device)}
