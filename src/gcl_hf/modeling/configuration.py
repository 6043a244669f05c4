"""`GCLConfig`: a CLIP-like backbone's config nested with the GCL fusion and loss settings."""

from __future__ import annotations

import math

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from gcl_hf.losses.settings import ALL_PAIRS, LossSettings, parse_pairs
from gcl_hf.modeling.fusion import FUSIONS

#: Loss fields of the config, in `LossSettings` order.
LOSS_FIELDS = ("pairs", "pair_weights", "negatives", "objective")


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
        negatives (`str`, *optional*):
            `"all"` (the paper's Eq. 2: one softmax over every batch embedding of the three modalities),
            `"modality"` (the per-pair ablation: a separate InfoNCE per pair over the target modality), or unset:
            `"all"` when a pair involves the fused modality and the objective is softmax, else `"modality"`
            (so CLIP's two pairs alone give CLIP's loss). `loss_settings.negatives` is the value in use.
        objective (`str`, defaults to `"softmax"`):
            `"softmax"` (InfoNCE, CLIP) or `"sigmoid"` (SigLIP's pairwise loss; `GCLModel.from_backbone` picks it
            for backbones trained with it).
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
    negatives: str | None = None
    objective: str = "softmax"
    logit_scale_init: float = math.log(1 / 0.07)
    logit_bias_init: float = -10.0
    lora_config: dict | None = None

    def __post_init__(self, **kwargs):
        self.pairs = [list(p) for p in (ALL_PAIRS if self.pairs is None else self.pairs)]
        super().__post_init__(**kwargs)
        self.validate_gcl()

    def validate_gcl(self) -> None:
        """Raise a `ValueError` naming the offending field when a GCL setting is invalid."""
        if self.fusion not in FUSIONS:
            raise ValueError(f"GCLConfig.fusion={self.fusion!r}: expected one of {FUSIONS}")
        try:
            self.loss_settings  # noqa: B018 - parses and checks the loss fields
        except ValueError as err:
            raise ValueError(f"GCLConfig: {err}") from None

    @property
    def loss_settings(self) -> LossSettings:
        """The parsed loss settings (with `negatives` resolved): what `GCLModel` trains with."""
        weights = None if self.pair_weights is None else tuple(float(w) for w in self.pair_weights)
        return _parse_settings(tuple(tuple(p) for p in self.pairs), weights, self.negatives, self.objective)

    def update_loss_settings(self, **updates: object) -> None:
        """Set loss fields (``pairs``, ``pair_weights``, ``negatives``, ``objective``) and validate them together:
        the one place a trainer, an adapter or a script changes how a model is trained. New ``pairs`` without
        ``pair_weights`` reset the weights (they belong to a pair list)."""
        unknown = sorted(set(updates) - set(LOSS_FIELDS))
        if unknown:
            raise ValueError(f"update_loss_settings: {unknown} are not loss fields {LOSS_FIELDS}")
        if "pairs" in updates and "pair_weights" not in updates:
            updates["pair_weights"] = None
        old = {k: getattr(self, k) for k in LOSS_FIELDS}
        for key, value in updates.items():
            if key == "pairs":
                value = [list(p) for p in parse_pairs(value)]
            elif key == "pair_weights" and value is not None:
                value = list(value)
            setattr(self, key, value)
        try:
            self.validate_gcl()
        except ValueError:
            for key, value in old.items():
                setattr(self, key, value)
            raise

    @property
    def projection_dim(self) -> int:
        """The embedding size (sentence-transformers reads this name for its output dimension)."""
        from gcl_hf.modeling.backbone import embedding_dim

        return embedding_dim(self.backbone_config)

    @property
    def pair_tuples(self) -> list[tuple[str, str]]:
        return [(a, b) for a, b in self.pairs]


_PARSED: dict[tuple, LossSettings] = {}


def _parse_settings(pairs: tuple, weights: tuple | None, negatives: str | None, objective: str) -> LossSettings:
    """Parse once per distinct set of values (the model asks on every step; a plain dict so that
    `torch.compile` traces the lookup without warnings)."""
    key = (pairs, weights, negatives, objective)
    if key not in _PARSED:
        _PARSED[key] = LossSettings.parse(pairs, weights, negatives, objective)
    return _PARSED[key]


__all__ = ["GCLConfig", "LOSS_FIELDS"]
