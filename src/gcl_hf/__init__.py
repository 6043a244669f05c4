"""gcl-hf: Generalized Contrastive Learning for universal multimodal retrieval on transformers.

``import gcl_hf`` registers ``GCLConfig``/``GCLModel`` with ``AutoConfig``/``AutoModel``. The heavier
parts (trainer, data, evaluation) load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from transformers import AutoConfig, AutoModel

from .configuration_gcl import GCLConfig
from .loss import ALL_PAIRS, CLIP_PAIRS, gcl_loss, parse_pairs
from .modeling_gcl import GCLModel, GCLOutput

__version__ = "0.1.0"

AutoConfig.register(GCLConfig.model_type, GCLConfig, exist_ok=True)
AutoModel.register(GCLConfig, GCLModel, exist_ok=True)

#: public name -> module that defines it (imported lazily)
_LAZY = {
    "GCLTrainer": "trainer",
    "GCLTrainingArguments": "training_args",
    "GCLCollator": "collator",
    "load_image_text_pairs": "data",
    "evaluate_retrieval": "evaluation",
    "encode_dataset": "encoding",
    "encode_corpus_distributed": "distributed_encoding",
    "exact_topk": "search",
    "modality_gap": "analysis",
    "RetrievalTask": "benchmarks",
    "load_benchmark": "benchmarks",
}

if TYPE_CHECKING:  # pragma: no cover
    from .analysis import modality_gap
    from .benchmarks import RetrievalTask, load_benchmark
    from .collator import GCLCollator
    from .data import load_image_text_pairs
    from .distributed_encoding import encode_corpus_distributed
    from .encoding import encode_dataset
    from .evaluation import evaluate_retrieval
    from .search import exact_topk
    from .trainer import GCLTrainer
    from .training_args import GCLTrainingArguments


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gcl_hf' has no attribute {name!r}")


__all__ = [
    "ALL_PAIRS",
    "CLIP_PAIRS",
    "GCLConfig",
    "GCLModel",
    "GCLOutput",
    "gcl_loss",
    "parse_pairs",
    "__version__",
    *_LAZY,
]
