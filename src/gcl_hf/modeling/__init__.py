"""The model: `GCLConfig`, `GCLModel` (image, text and fused embeddings over any CLIP-like backbone), fusion."""

from gcl_hf.modeling.configuration import GCLConfig
from gcl_hf.modeling.fusion import FusionMLP, fuse
from gcl_hf.modeling.model import GCLModel, GCLOutput, GCLPreTrainedModel

__all__ = ["FusionMLP", "GCLConfig", "GCLModel", "GCLOutput", "GCLPreTrainedModel", "fuse"]
