"""gcl-hf: Generalized Contrastive Learning for universal multimodal retrieval on transformers.

``import gcl_hf`` registers ``GCLConfig``/``GCLModel`` with ``AutoConfig``/``AutoModel`` (and the VISTA backbone,
``model_type="vista"``, with the auto classes of config, model, image processor and processor). The heavier
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

import gcl_hf._moved  # noqa: F401 - an import of a moved module names its new path

__version__ = "0.1.0"


def register_auto_classes() -> None:
    """Register ``GCLConfig`` / ``GCLModel`` with transformers' ``AutoConfig`` / ``AutoModel``, the VISTA backbone
    with the auto classes, and wire ``GCLModel.push_to_hub``'s publisher (once per process)."""
    global _registered
    if _registered:
        return
    from transformers import AutoConfig, AutoModel

    from gcl_hf.modeling.configuration import GCLConfig
    from gcl_hf.modeling.model import GCLModel
    from gcl_hf.modeling.vista import register as register_vista

    AutoConfig.register(GCLConfig.model_type, GCLConfig, exist_ok=True)
    AutoModel.register(GCLConfig, GCLModel, exist_ok=True)
    GCLModel.publisher = staticmethod(_publish)
    register_vista()
    _registered = True


_registered = False


def _started_by_cli() -> bool:
    """Whether this process is the `gcl-hf` command line (console script or ``python -m gcl_hf.cli``)."""
    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    orig = getattr(sys, "orig_argv", [])
    return script in ("gcl-hf", "gcl-hf.exe") or any(
        a == "-m" and b in ("gcl_hf.cli", "gcl_hf.cli.main") for a, b in zip(orig, orig[1:]))


def _publish(*args: Any, **kwargs: Any) -> Any:
    """`GCLModel.push_to_hub`'s publisher, wired here (the package root) so that modeling never imports hub."""
    from gcl_hf.hub.publish import publish

    return publish(*args, **kwargs)


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
    "VistaConfig": "gcl_hf.modeling.vista",
    "VistaModel": "gcl_hf.modeling.vista",
    "VistaProcessor": "gcl_hf.modeling.vista",
    "convert_vista": "gcl_hf.modeling.vista.convert",
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
