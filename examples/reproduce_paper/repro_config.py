"""Settings of the paper reproduction (`reproduce.py`): backbones, arms, benchmarks, training and evaluation.

The defaults are the full run. Where the GCL paper's own value could not be read from a public source, the
default says where it comes from instead (mostly UniIR's CLIP-SF recipe, which the paper's CLIP-SF baseline is
built on); ``README.md`` lists every value with its source. ``SMOKE_*`` replace them for ``--smoke``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gcl_hf import ALL_PAIRS, CLIP_PAIRS

HERE = Path(__file__).resolve().parent
#: The numbers the paper reports (``null`` where no public source could be read; see README.md).
PAPER_RESULTS_FILE = HERE / "paper_results.json"


@dataclass(frozen=True)
class Backbone:
    """A checkpoint to fine-tune: a table label, a Hub id or local directory, and its fusion (``None``: what the
    backbone implies: ``"backbone"`` for VISTA's own fused encoder, else ``"sum"``)."""

    label: str
    name_or_path: str
    fusion: str | None = None


#: The paper's backbones: two with score fusion (CLIP-SF = CLIP ViT-B/32 with UniIR's score fusion, and
#: TinyCLIP) and VISTA (its own fused encoder), from the directory ``gcl-hf convert-vista`` writes (README.md).
PAPER_BACKBONES = (
    Backbone("CLIP-SF", "openai/clip-vit-base-patch32", fusion="sum"),
    Backbone("TinyCLIP-SF", "wkcn/TinyCLIP-ViT-8M-16-Text-3M-YFCC15M", fusion="sum"),
    Backbone("VISTA", "vista-base"),
)


@dataclass(frozen=True)
class Arm:
    """One row of the comparison: the pre-trained model, or a fine-tuning loss (``None`` = no training)."""

    name: str
    label: str
    pairs: tuple[tuple[str, str], ...] | None = None
    negatives: str | None = None


#: Pre-trained, +CL (CLIP's image<->text loss on the same pairs: the paper's baseline) and +GCL (Eq. 2: six
#: directed pairs, every in-batch embedding of the three modalities in each denominator). Both losses are set
#: explicitly so that a change of the library's defaults cannot change the comparison.
ARMS = (
    Arm("pretrained", "pre-trained"),
    Arm("cl", "+CL", pairs=tuple(CLIP_PAIRS), negatives="modality"),
    Arm("gcl", "+GCL", pairs=tuple(ALL_PAIRS), negatives="all"),
)


@dataclass(frozen=True)
class BenchmarkSpec:
    """How one column of the table is computed: which loader, with which options, and which headline."""

    key: str
    label: str
    loader: str
    headline: str  # what the headline number averages (for the table's caption)


BENCHMARKS = (
    BenchmarkSpec("mbeir_local", "M-BEIR local", "mbeir",
                  "mean over the tasks of Recall@5 (Recall@10 for FashionIQ, Fashion200K), each task in its own pool"),
    BenchmarkSpec("mbeir_global", "M-BEIR global + instr.", "mbeir",
                  "same, every task against the 5.6M-item union pool, queries with UniIR's instructions"),
    BenchmarkSpec("mmeb", "MMEB retrieval", "mmeb", "mean Precision@1 over the retrieval subsets"),
    BenchmarkSpec("covr", "CoVR", "covr", "Recall@1 (R@5/10/50 in results.json), source video removed"),
)


@dataclass
class TrainSettings:
    """Fine-tuning settings, identical for +CL and +GCL (same steps, batch, LR, seed and data order)."""

    global_batch_size: int = 630  # UniIR CLIP-SF: 105 per GPU x 6 GPUs (paper's value not found)
    epochs: float = 1.0  # one pass over LCS-558K (paper's value not found)
    max_steps: int | None = None  # overrides epochs when set
    learning_rate: float = 1e-5  # UniIR CLIP-SF
    lr_scheduler_type: str = "cosine"  # UniIR: CosineAnnealingLR to 0, no warm-up
    warmup_steps: float = 0  # an int is steps, a float in [0, 1) a fraction of them
    weight_decay: float = 0.2  # UniIR: AdamW, 0.2 except gains/biases/logit scale
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_epsilon: float = 1e-6
    seed: int = 2023  # UniIR's seed; also the data order's
    lora_r: int | None = None  # None = full fine-tuning (as UniIR's CLIP-SF)
    lora_alpha: int = 16
    train_logit_scale: bool = True  # CLIP's learned temperature keeps training (as in UniIR)
    gradient_cache_chunk_size: int | None = 128  # memory only: the gradient is that of the whole batch
    precision: str = "auto"  # auto: bf16 on a GPU that has it, else fp32 (UniIR used fp16 AMP)
    dataloader_num_workers: int = 8
    logging_steps: int = 20
    max_train_samples: int | None = None


@dataclass
class EvalSettings:
    """Evaluation settings (every model sees the same ones)."""

    batch_size: int = 256
    num_workers: int = 8
    mbeir_split: str = "test"
    mbeir_local_instructions: bool = False  # local pools: bare queries; the global pool always gets instructions
    mmeb_subsets: tuple[str, ...] | None = None  # None: the 12 retrieval subsets
    covr_split: str = "test"
    benchmarks: tuple[str, ...] = tuple(b.key for b in BENCHMARKS)
    show_progress: bool = True


#: ``--smoke``: a few steps on tiny models and fixtures, on the CPU, in seconds.
SMOKE_TRAIN = TrainSettings(
    global_batch_size=4, max_steps=3, learning_rate=1e-3, gradient_cache_chunk_size=2, precision="fp32",
    dataloader_num_workers=0, logging_steps=1,
)
SMOKE_EVAL = EvalSettings(batch_size=16, num_workers=0, show_progress=False)


@dataclass
class Paths:
    """Where the data lives and where the outputs go (see README.md for the download commands)."""

    train_data: str
    image_root: str | None
    mbeir_root: str | None
    mmeb_root: str | None
    covr_root: str | None
    output_dir: str
    mbeir_image_root: str | None = None
    mmeb_image_root: str | None = None
    covr_frames_root: str | None = None


@dataclass
class ReproConfig:
    """Everything one run needs; written to ``results.json`` next to the numbers."""

    backbones: tuple[Backbone, ...]
    paths: Paths
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    smoke: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_paper_results(path: Path = PAPER_RESULTS_FILE) -> dict[str, Any]:
    """The paper's reported numbers: ``{backbone: {arm: {benchmark: {"value", "source"} | None}}}``."""
    data = json.loads(Path(path).read_text())
    return data.get("results", {})
