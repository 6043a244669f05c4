"""`GCLTrainingArguments`: `TrainingArguments` plus the GCL loss, LoRA, freezing and gradient-cache settings.

Every field is a command-line flag through `HfArgumentParser` (`examples/train_gcl.py`, `gcl-hf train`).

Precedence of the loss settings: `pairs`, `pair_weights`, `negatives` and `objective` default to `None`,
which keeps what the model's `GCLConfig` says (itself defaulting to the paper: the six pairs, one softmax over
all three modalities (Eq. 2), the softmax objective — or sigmoid for a SigLIP backbone). A value given here
overrides the model config when `GCLTrainer` is built (through `GCLConfig.update_loss_settings`, the one
writer), and is then saved with the model. `fusion` is a property of the model (the "mlp" head has weights):
`GCLTrainer` and `gcl-hf train` pass `model_overrides()` to `GCLModel.from_backbone`, and `GCLTrainer` only
checks that a model it is given agrees. Pair strings and weights are parsed by `gcl_hf.losses.settings`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any, Literal

from transformers import TrainingArguments

from gcl_hf.errors import ErrorMode, check_errors_mode
from gcl_hf.losses.settings import ALL_PAIRS, NEGATIVES, OBJECTIVES, LossSettings, parse_pair_weights, parse_pairs
from gcl_hf.modeling.backbone import GENERIC_FAMILY, family_of
from gcl_hf.modeling.fusion import FUSIONS

__all__ = ["GCLTrainingArguments"]


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass(repr=False)  # keep TrainingArguments' repr, which hides the Hub token
class GCLTrainingArguments(TrainingArguments):
    """`TrainingArguments` for `GCLTrainer`; see the module docstring for how loss fields meet the model config.

    The Hub token (``hub_token``) is never written: ``repr``/``str``/``to_dict`` hide it (as in transformers) and
    so does pickling, which is how `Trainer` saves ``training_args.bin`` with every checkpoint and model.
    """

    # --- the GCL loss (None: keep the model config's value) ---
    pairs: str | None = field(
        default=None,
        metadata={"help": "Directed (anchor->target) modality pairs of the loss: 'all' (GCL's six pairs), 'clip' "
                          "(image<->text only) or a list such as 'image->text,text->image,image->fused'. "
                          "Default: the model config's pairs."},
    )
    pair_weights: str | None = field(
        default=None,
        metadata={"help": "Pair weights: one number per pair ('1,1,2,2,1,1') or named ('image->fused=2'); "
                          "the loss is sum(w*L)/sum(w). Default: the model config's (all 1)."},
    )
    negatives: Literal["all", "modality"] | None = field(
        default=None,
        metadata={"help": "'all' (the paper's Eq. 2: one softmax over the batch embeddings of all three modalities) "
                          "or 'modality' (the per-pair ablation: a separate InfoNCE per pair over the target "
                          "modality). Default: the model config's (unset: 'all' when a pair uses fused items, "
                          "else 'modality', so --pairs clip is CLIP's loss)."},
    )
    objective: Literal["softmax", "sigmoid"] | None = field(
        default=None,
        metadata={"help": "'softmax' (InfoNCE, CLIP-like backbones) or 'sigmoid' (SigLIP backbones). "
                          "Default: the model config's."},
    )
    fusion: Literal["sum", "mean", "mlp", "backbone"] | None = field(
        default=None,
        metadata={"help": "How fused items are embedded when the scripts wrap a backbone: 'sum' (UniIR score "
                          "fusion), 'mean' or 'mlp' (a learned head that starts as 'sum'). GCLTrainer checks that "
                          "the model agrees."},
    )
    # --- memory ---
    gradient_cache_chunk_size: int | None = field(
        default=None,
        metadata={"help": "Gradient cache: embed the per-device batch in chunks of this many pairs (no graph kept), "
                          "compute the loss on the whole batch, then re-embed chunk by chunk with the cached "
                          "embedding gradients. Same gradient as one pass; memory of one chunk. Default: off."},
    )
    # --- what trains ---
    train_logit_scale: bool = field(
        default=True, metadata={"help": "Train the temperature (logit scale, and SigLIP's logit bias) or freeze it."}
    )
    freeze_vision: bool = field(default=False, metadata={"help": "Freeze the vision tower and its projection."})
    freeze_text: bool = field(default=False, metadata={"help": "Freeze the text tower and its projection."})
    lora_r: int | None = field(
        default=None,
        metadata={"help": "LoRA rank: fine-tune low-rank adapters on the backbone instead of all weights "
                          "(ignored when a peft_config is passed to GCLTrainer). Default: full fine-tuning."},
    )
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha (adapter scale = alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA adapters' inputs."})
    lora_target_modules: str | None = field(
        default=None,
        metadata={"help": "Comma-separated module names that get adapters. Default: the backbone family's "
                          "attention projections of both towers (CLIP/SigLIP: 'q_proj,k_proj,v_proj,out_proj'; "
                          "see gcl_hf.modeling.backbone.FAMILIES); add 'fc1,fc2' for the MLPs."},
    )
    # --- data ---
    image_column: str = field(default="image", metadata={"help": "Dataset column holding the images."})
    caption_column: str = field(default="text", metadata={"help": "Dataset column holding the captions."})
    image_errors: ErrorMode = field(
        default="raise",
        metadata={"help": "A missing or corrupt training image: 'raise' an error naming the row and path, or "
                          "'skip' the pair and count it (the batch gets one pair fewer)."},
    )
    # --- robustness ---
    nan_guard: bool = field(
        default=True,
        metadata={"help": "Stop, before the update, with an error naming the step and the pair (or the parameter) "
                          "when the loss (or a gradient) becomes NaN or inf."},
    )
    allow_pickle: bool = field(
        default=False,
        metadata={"help": "Allow pickle model weights (pytorch_model.bin, ...) when resuming from a checkpoint; "
                          "pickle files can run code when loaded, so only for checkpoints you trust."},
    )
    # --- retrieval evaluation (GCLTrainer(eval_tasks=...)) ---
    retrieval_k: str | None = field(
        default=None,
        metadata={"help": "Comma-separated k of Recall@k for each evaluation task. Default: each task's own k."},
    )
    # --- TrainingArguments fields whose help is about gcl-hf ---
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={"help": "Resume training (gcl-hf train, GCLTrainer.train): a checkpoint directory "
                          "(OUTPUT_DIR/checkpoint-N), or 'last' for the newest complete checkpoint in --output_dir."},
    )
    # --- Trainer defaults changed for image-caption data ---
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Keep the raw image/caption columns: GCLCollator decodes and tokenizes them."},
    )

    def __post_init__(self) -> None:
        self._check_gcl_fields()
        super().__post_init__()
        if self.dataloader_pin_memory and (self.use_cpu or not _cuda_available()):
            self.dataloader_pin_memory = False  # nothing to pin for (torch warns at every dataloader otherwise)

    # pickling (torch.save of training_args.bin) leaves every *_token field out; copies keep it
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in [k for k in state if k.endswith("_token") and isinstance(state[k], str)]:
            state[name] = None
        return state

    def __copy__(self) -> GCLTrainingArguments:
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        return clone

    def __deepcopy__(self, memo: dict[int, Any]) -> GCLTrainingArguments:
        import copy

        clone = object.__new__(type(self))
        memo[id(self)] = clone
        clone.__dict__.update({k: copy.deepcopy(v, memo) for k, v in self.__dict__.items()})
        return clone

    def _check_gcl_fields(self) -> None:
        if self.pairs is not None:
            parse_pair_weights(self.pair_weights, parse_pairs(self.pairs))  # a ValueError names the bad item
        # without `pairs`, weights are checked against the model's pairs by GCLTrainer
        if self.objective is not None or self.negatives is not None:
            # the loss settings' one parser decides what combines (objective="sigmoid" has no negatives="all"),
            # now rather than inside the trainer; unset pairs stand for the paper's six
            try:
                LossSettings.parse(self.pairs if self.pairs is not None else ALL_PAIRS,
                                   negatives=self.negatives, objective=self.objective or "softmax")
            except ValueError as exc:
                raise ValueError(f"GCLTrainingArguments: {exc}") from None
        check_errors_mode(self.image_errors, "GCLTrainingArguments.image_errors")
        for name, allowed in (("negatives", NEGATIVES), ("objective", OBJECTIVES), ("fusion", FUSIONS)):
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ValueError(f"GCLTrainingArguments.{name}={value!r}: expected one of {allowed}")
        if self.gradient_cache_chunk_size is not None and self.gradient_cache_chunk_size < 1:
            raise ValueError(f"gradient_cache_chunk_size={self.gradient_cache_chunk_size}: must be >= 1 (or unset)")
        if self.lora_r is not None and self.lora_r < 1:
            raise ValueError(f"lora_r={self.lora_r}: the LoRA rank must be >= 1 (or unset for full fine-tuning)")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout={self.lora_dropout}: must be in [0, 1)")
        if self.freeze_vision and self.freeze_text and self.lora_r is None and not self.train_logit_scale:
            raise ValueError("freeze_vision, freeze_text and train_logit_scale=False leave nothing to train")
        self.retrieval_ks  # noqa: B018 - validates retrieval_k

    @property
    def retrieval_ks(self) -> tuple[int, ...] | None:
        """``retrieval_k`` as a tuple of positive ints (``None`` when unset)."""
        from gcl_hf.retrieval.options import parse_ks

        return None if self.retrieval_k is None else parse_ks(self.retrieval_k, "retrieval_k")

    def lora_config(self, model: Any = None) -> Any | None:
        """A peft ``LoraConfig`` from the ``lora_*`` shortcuts, or ``None`` when ``lora_r`` is unset. Without
        ``lora_target_modules`` the targets are ``model``'s family defaults (CLIP's without a model)."""
        if self.lora_r is None:
            return None
        from peft import LoraConfig

        if self.lora_target_modules is None:
            family = family_of(model) if model is not None else GENERIC_FAMILY
            return LoraConfig(r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                              target_modules=list(family.lora_target_modules))
        targets = [m.strip() for m in self.lora_target_modules.split(",") if m.strip()]
        if not targets:
            raise ValueError("lora_target_modules is empty")
        return LoraConfig(r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                          target_modules=targets)

    def model_overrides(self) -> dict[str, Any]:
        """`GCLModel.from_backbone` overrides these arguments set (``fusion``, ``objective``); what the backbone
        implies (SigLIP → sigmoid) is decided by ``from_backbone`` itself."""
        return {k: getattr(self, k) for k in ("fusion", "objective") if getattr(self, k) is not None}

    def gcl_config_updates(self, model_pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
        """The loss fields these arguments set explicitly, for `GCLConfig.update_loss_settings` (``{}`` when all
        are left at ``None``). ``model_pairs`` are the model's current pairs, used for positional ``pair_weights``
        when ``pairs`` is unset."""
        updates: dict[str, Any] = {}
        pairs = parse_pairs(self.pairs) if self.pairs is not None else tuple(model_pairs)
        if self.pairs is not None:
            updates["pairs"] = [list(p) for p in pairs]
        weights = parse_pair_weights(self.pair_weights, pairs)
        if weights is not None:
            updates["pair_weights"] = list(weights)
        if self.negatives is not None:
            updates["negatives"] = self.negatives
        if self.objective is not None:
            updates["objective"] = self.objective
        return updates
