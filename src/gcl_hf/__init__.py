"""gcl-hf: Generalized Contrastive Learning for universal multimodal retrieval on transformers.

``import gcl_hf`` registers ``GCLConfig``/``GCLModel`` with ``AutoConfig``/``AutoModel`` (and the VISTA backbone,
``model_type="vista"``, with the auto classes of config, model, image processor and processor). The heavier
parts (trainer, data, evaluation) load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from transformers import AutoConfig, AutoModel

import gcl_hf._moved  # noqa: F401 - an import of a moved module names its new path
from gcl_hf.modeling.configuration import GCLConfig
from gcl_hf.losses.gcl import ALL_PAIRS, CLIP_PAIRS, gcl_loss, parse_pairs
from gcl_hf.modeling.model import GCLModel, GCLOutput

__version__ = "0.1.0"

AutoConfig.register(GCLConfig.model_type, GCLConfig, exist_ok=True)
AutoModel.register(GCLConfig, GCLModel, exist_ok=True)


def _publish(*args: Any, **kwargs: Any) -> Any:
    """`GCLModel.push_to_hub`'s publisher, wired here (the package root) so that modeling never imports hub."""
    from gcl_hf.hub.publish import publish

    return publish(*args, **kwargs)


GCLModel.publisher = staticmethod(_publish)

from gcl_hf.modeling.vista import register as _register_vista  # noqa: E402

_register_vista()

#: public name -> module that defines it (imported lazily)
_LAZY = {
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
        value = getattr(importlib.import_module(_LAZY[name]), name)
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
