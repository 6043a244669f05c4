"""`GCLConfig`: a CLIP-like backbone's config nested with the GCL fusion and loss settings."""

from __future__ import annotations

import math

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

FUSIONS = ("sum", "mean", "mlp")
NEGATIVES = ("modality", "all")
OBJECTIVES = ("softmax", "sigmoid")
_MODALITIES = ("image", "text", "fused")
#: The six ordered (anchor, target) pairs of the paper, as stored in configs.
DEFAULT_PAIRS = [
    ["image", "text"], ["text", "image"],
    ["image", "fused"], ["fused", "image"],
    ["text", "fused"], ["fused", "text"],
]


@strict
class GCLConfig(PreTrainedConfig):
    r"""Configuration of a [`GCLModel`]: the backbone's config nested (as `VisionTextDualEncoderConfig`
    nests its towers), plus how fused items are embedded and how the GCL loss is computed.

    Args:
        backbone_config (`PreTrainedConfig` or `dict`):
            Config of the wrapped CLIP-like model (CLIP, SigLIP, AltCLIP, ChineseCLIP, ...). Stored as a copy:
            the backbone's own config object is never shared with the wrapper.
        fusion (`str`, defaults to `"sum"`):
            `"sum"`: UniIR's score fusion (raw image + text projections, then normalised); `"mean"`: mean of the
            normalised embeddings; `"mlp"`: `sum` plus a learned residual head initialised to zero.
        fusion_hidden_size (`int`, *optional*):
            Hidden width of the `"mlp"` fusion head (defaults to the embedding size).
        pairs (`list[list[str]]`, defaults to the six ordered modality pairs):
            (anchor, target) modality pairs the loss contrasts; names from `image`, `text`, `fused`.
        pair_weights (`list[float]`, *optional*):
            One non-negative weight per pair (default: all 1).
        negatives (`str`, defaults to `"modality"`):
            `"modality"` (the paper's form) or `"all"` (every other batch embedding is a negative).
        objective (`str`, defaults to `"softmax"`):
            `"softmax"` (InfoNCE, CLIP) or `"sigmoid"` (SigLIP's pairwise loss).
        logit_scale_init (`float`, defaults to `log(1/0.07)`):
            Initial *log* logit scale when the backbone has no `logit_scale` parameter.
        logit_bias_init (`float`, defaults to -10.0):
            Initial logit bias for the sigmoid objective when the backbone has no `logit_bias`.
        lora_config (`dict`, *optional*):
            A peft `LoraConfig` as a dict when the backbone carries (unmerged) LoRA adapters; the model re-applies
            it on load so checkpoints round-trip. Cleared by `GCLModel.merge_lora()`.
    """

    model_type = "gcl"
    sub_configs_defaults = {"backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="clip")}

    backbone_config: PreTrainedConfig | dict | None = None
    fusion: str = "sum"
    fusion_hidden_size: int | None = None
    pairs: list | None = None
    pair_weights: list | None = None
    negatives: str = "modality"
    objective: str = "softmax"
    logit_scale_init: float = math.log(1 / 0.07)
    logit_bias_init: float = -10.0
    lora_config: dict | None = None

    def __post_init__(self, **kwargs):
        if self.pairs is None:
            self.pairs = [list(p) for p in DEFAULT_PAIRS]
        else:
            self.pairs = [list(p) for p in self.pairs]
        super().__post_init__(**kwargs)
        self.validate_gcl()

    def validate_gcl(self) -> None:
        """Raise a `ValueError` naming the offending field when a GCL setting is invalid."""
        if self.fusion not in FUSIONS:
            raise ValueError(f"GCLConfig.fusion={self.fusion!r}: expected one of {FUSIONS}")
        if self.negatives not in NEGATIVES:
            raise ValueError(f"GCLConfig.negatives={self.negatives!r}: expected one of {NEGATIVES}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"GCLConfig.objective={self.objective!r}: expected one of {OBJECTIVES}")
        if not self.pairs:
            raise ValueError("GCLConfig.pairs is empty: give at least one (anchor, target) pair")
        for pair in self.pairs:
            if len(pair) != 2 or any(m not in _MODALITIES for m in pair):
                raise ValueError(f"GCLConfig.pairs: {pair!r} is not an (anchor, target) pair of {_MODALITIES}")
        if self.pair_weights is not None:
            if len(self.pair_weights) != len(self.pairs):
                raise ValueError(
                    f"GCLConfig.pair_weights has {len(self.pair_weights)} weights for {len(self.pairs)} pairs"
                )
            if any(float(w) < 0 for w in self.pair_weights) or sum(float(w) for w in self.pair_weights) <= 0:
                raise ValueError(f"GCLConfig.pair_weights={self.pair_weights}: weights must be >= 0, not all 0")

    @property
    def pair_tuples(self) -> list[tuple[str, str]]:
        return [(a, b) for a, b in self.pairs]


__all__ = ["GCLConfig"]
