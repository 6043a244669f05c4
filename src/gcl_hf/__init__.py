"""gcl-hf: Generalized Contrastive Learning for universal multimodal retrieval on transformers."""

from transformers import AutoConfig, AutoModel

from .configuration_gcl import GCLConfig
from .loss import ALL_PAIRS, CLIP_PAIRS, gcl_loss, parse_pairs
from .modeling_gcl import GCLModel, GCLOutput

__version__ = "0.1.0"

AutoConfig.register(GCLConfig.model_type, GCLConfig, exist_ok=True)
AutoModel.register(GCLConfig, GCLModel, exist_ok=True)

__all__ = [
    "ALL_PAIRS",
    "CLIP_PAIRS",
    "GCLConfig",
    "GCLModel",
    "GCLOutput",
    "gcl_loss",
    "parse_pairs",
    "__version__",
]
