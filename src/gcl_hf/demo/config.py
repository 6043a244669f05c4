"""What a `gcl-hf demo` run is made of: the fine-tuning arms and the run configuration (no code that runs)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from gcl_hf.demo.corpus import DemoCorpusConfig
from gcl_hf.demo.items import ItemLayout, max_caption_words

__all__ = ["ARMS", "BASELINE", "CLAIM_ARM", "PRETRAINED", "PRETRAIN_ARM", "Arm", "DemoBackboneConfig", "DemoConfig",
           "demo_max_length"]


def demo_max_length(layout: ItemLayout | None = None) -> int:
    """Token budget that fits every caption of ``layout`` (default: the default layout) + BOS/EOS."""
    return max_caption_words(layout or ItemLayout()) + 2


@dataclass
class DemoBackboneConfig:
    """Size of the demo backbone (both towers share width and depth)."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    projection_dim: int = 64
    image_size: int = 48
    patch_size: int = 8
    max_length: int = demo_max_length()


#: Result key of the pre-trained model (the start of every arm).
PRETRAINED = "pretrained"


@dataclass(frozen=True)
class Arm:
    """One fine-tuning recipe: the loss the pre-trained model is fine-tuned with (passed to
    `GCLTrainingArguments` explicitly, so library defaults never decide an arm)."""

    key: str
    label: str
    pairs: str  # "clip" (image<->text) or "all" (GCL's six directed pairs)
    negatives: str  # "all" (the paper's Eq. 2) or "modality" (one InfoNCE per pair)
    note: str = ""  # one line for the table's caption


#: The loss of the pre-training ("off-the-shelf checkpoint"): plain CLIP.
PRETRAIN_ARM = Arm("pretrain", "CLIP loss", pairs="clip", negatives="modality")

#: The default arms. The first is the baseline the others are compared with.
ARMS: tuple[Arm, ...] = (
    Arm("cl", "+CL", pairs="clip", negatives="modality",
        note="+CL: image<->text InfoNCE on the same pairs (the paper's baseline)."),
    Arm("gcl", "+GCL", pairs="all", negatives="all",
        note='+GCL: the six modality pairs, negatives="all" (the paper\'s Eq. 2).'),
    Arm("gcl-pair", "+GCL per-pair", pairs="all", negatives="modality",
        note='+GCL per-pair: the six pairs, negatives="modality" (ablation: six separate InfoNCE terms).'),
)
#: The arm the verdict is about, and the baseline it is compared with.
CLAIM_ARM, BASELINE = "gcl", "cl"


@dataclass
class DemoConfig:
    """Everything that determines a demo run (defaults: the full demo, about 10 minutes on 2 CPU cores).

    Each seed is a full replicate: corpus (train pairs, test groups, renderings), backbone initialisation,
    pre-training, and the fine-tuning data order shared by that seed's arms.
    """

    output_dir: str = "gcl-demo-output"
    seeds: tuple[int, ...] = (0, 1, 2)
    num_train: int = 20_000
    num_test: int = 480
    linked_objects: int = 2
    image_only_objects: int = 1
    text_only_objects: int = 1
    pretrain_steps: int = 600
    steps: int = 100
    batch_size: int = 128
    pretrain_lr: float = 1e-3
    lr: float = 2e-4
    weight_decay: float = 0.1
    pretrain_warmup_steps: int = 60
    eval_batch_size: int = 256
    arms: tuple[Arm, ...] = ARMS
    backbone: DemoBackboneConfig = field(default_factory=DemoBackboneConfig)
    #: queries per cell shown in gallery.html (0: no gallery)
    gallery_queries: int = 3
    #: torch CPU threads (``None``: ``min(2, os.cpu_count())``, the demo's target machine).
    num_threads: int | None = None
    plot: bool = True
    progress: bool = True

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """A CI-sized run (about a minute on 2 quiet cores): fewer pairs, test items and steps."""
        base = cls(num_train=2_000, num_test=96, pretrain_steps=60, steps=30, batch_size=64,
                   pretrain_warmup_steps=6, eval_batch_size=128)
        return replace(base, **overrides)

    def __post_init__(self) -> None:
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"DemoConfig.seeds must be distinct, non-negative and non-empty, got "
                             f"{','.join(map(str, self.seeds)) or 'none'}")
        for name in ("lr", "pretrain_lr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"DemoConfig.{name} must be a finite number > 0, got {value}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"DemoConfig.weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"DemoConfig.num_threads must be >= 1 (or unset), got {self.num_threads}")
        for name in ("num_train", "num_test", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"DemoConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("pretrain_steps", "steps", "pretrain_warmup_steps", "gallery_queries"):
            if getattr(self, name) < 0:
                raise ValueError(f"DemoConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size > self.num_train:
            raise ValueError(f"DemoConfig.batch_size={self.batch_size} exceeds num_train={self.num_train}")
        if not self.arms:
            raise ValueError("DemoConfig.arms is empty")
        keys = [arm.key for arm in self.arms]
        if len(set(keys)) != len(keys) or PRETRAINED in keys:
            raise ValueError(f"DemoConfig.arms: keys must be unique and not {PRETRAINED!r}, got {keys}")
        self.corpus_config(self.seeds[0])  # validates num_test and the layout
        needed = demo_max_length(self.corpus_config(self.seeds[0]).layout)
        if self.backbone.max_length < needed:
            self.backbone = replace(self.backbone, max_length=needed)

    @property
    def baseline(self) -> str:
        return self.arms[0].key

    def corpus_config(self, seed: int) -> DemoCorpusConfig:
        return DemoCorpusConfig(num_train=self.num_train, num_test=self.num_test,
                                image_size=self.backbone.image_size, linked_objects=self.linked_objects,
                                image_only_objects=self.image_only_objects,
                                text_only_objects=self.text_only_objects, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["seeds"] = list(self.seeds)
        out["arms"] = [asdict(arm) for arm in self.arms]
        return out
