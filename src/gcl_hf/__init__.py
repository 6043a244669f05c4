"""gcl-hf: Generalized Contrastive Learning for universal multimodal retrieval."""

__version__ = "0.1.0"
