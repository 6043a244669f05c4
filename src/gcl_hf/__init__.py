"""gcl-hf: Generalized Contrastive Learning for universal multimodal retrieval on transformers.

``import gcl_hf`` registers ``GCLConfig``/``GCLModel`` with ``AutoConfig``/``AutoModel``. The heavier
parts (trainer, data, evaluation) load on first use.

The `gcl-hf` command line (the console script, ``python -m gcl_hf.cli``) imports this package without the
registration, so that ``--help`` and ``--version`` answer without loading torch; a command that runs calls
:func:`register_auto_classes` itself, and so does the first use of a model name below.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"


def register_auto_classes() -> None:
    """Register ``GCLConfig`` / ``GCLModel`` with transformers' ``AutoConfig`` / ``AutoModel`` (idempotent)."""
    from transformers import AutoConfig, AutoModel

    from gcl_hf.modeling.configuration import GCLConfig
    from gcl_hf.modeling.model import GCLModel

    AutoConfig.register(GCLConfig.model_type, GCLConfig, exist_ok=True)
    AutoModel.register(GCLConfig, GCLModel, exist_ok=True)


def _started_by_cli() -> bool:
    """Whether this process is the `gcl-hf` command line (console script or ``python -m gcl_hf.cli``)."""
    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    orig = getattr(sys, "orig_argv", [])
    return script in ("gcl-hf", "gcl-hf.exe") or any(
        a == "-m" and b in ("gcl_hf.cli", "gcl_hf.cli.main") for a, b in zip(orig, orig[1:]))


#: public name -> module that defines it (imported lazily)
_LAZY = {
    "GCLConfig": "gcl_hf.modeling.configuration",
    "GCLModel": "gcl_hf.modeling.model",
    "GCLOutput": "gcl_hf.modeling.model",
    "ALL_PAIRS": "gcl_hf.losses.gcl",
    "CLIP_PAIRS": "gcl_hf.losses.gcl",
    "gcl_loss": "gcl_hf.losses.gcl",
    "parse_pairs": "gcl_hf.losses.gcl",
    "GCLTrainer": "gcl_hf.training.trainer",
    "GCLTrainingArguments": "gcl_hf.training.arguments",
    "GCLCollator": "gcl_hf.data.collator",
    "load_image_text_pairs": "gcl_hf.data.pairs",
    "evaluate_retrieval": "gcl_hf.retrieval.evaluation",
    "encode_dataset": "gcl_hf.retrieval.encoding",
    "encode_corpus_distributed": "gcl_hf.retrieval.distributed_encoding",
    "exact_topk": "gcl_hf.retrieval.search",
    "GCLIndex": "gcl_hf.retrieval.index",
    "modality_gap": "gcl_hf.retrieval.analysis",
    "RetrievalTask": "gcl_hf.benchmarks.task",
    "load_benchmark": "gcl_hf.benchmarks.registry",
}

if TYPE_CHECKING:  # pragma: no cover
    from gcl_hf.losses.gcl import ALL_PAIRS, CLIP_PAIRS, gcl_loss, parse_pairs  # noqa: F401
    from gcl_hf.modeling.configuration import GCLConfig  # noqa: F401
    from gcl_hf.modeling.model import GCLModel, GCLOutput  # noqa: F401
    from gcl_hf.retrieval.analysis import modality_gap  # noqa: F401
    from gcl_hf.benchmarks import RetrievalTask, load_benchmark  # noqa: F401
    from gcl_hf.data.collator import GCLCollator  # noqa: F401
    from gcl_hf.data.pairs import load_image_text_pairs  # noqa: F401
    from gcl_hf.retrieval.distributed_encoding import encode_corpus_distributed  # noqa: F401
    from gcl_hf.retrieval.encoding import encode_dataset  # noqa: F401
    from gcl_hf.retrieval.evaluation import evaluate_retrieval  # noqa: F401
    from gcl_hf.retrieval.index import GCLIndex  # noqa: F401
    from gcl_hf.retrieval.search import exact_topk  # noqa: F401
    from gcl_hf.training.trainer import GCLTrainer  # noqa: F401
    from gcl_hf.training.arguments import GCLTrainingArguments  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        register_auto_classes()  # a model name used first: the Auto classes know it too
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gcl_hf' has no attribute {name!r}")


if not _started_by_cli():
    register_auto_classes()

__all__ = ["__version__", "register_auto_classes", *_LAZY]
