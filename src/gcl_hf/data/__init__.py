"""Training data: image–caption pairs from files or the Hub, image decoding, and the batch collator.

`load_image_text_pairs` (which needs ``datasets``) loads on first use, so that importing the model, the collator or
the images never imports ``datasets``.
"""

from typing import Any

from gcl_hf.data.collator import GCLCollator
from gcl_hf.data.errors import DataFormatError, DataSourceError, LoadReport, SkippedRecord
from gcl_hf.data.images import ImageLoadError, open_image, resolve_image_path

__all__ = [
    "DataFormatError", "DataSourceError", "GCLCollator", "ImageLoadError", "LoadReport", "SkippedRecord",
    "load_image_text_pairs", "open_image", "resolve_image_path",
]


def __getattr__(name: str) -> Any:
    if name == "load_image_text_pairs":
        from gcl_hf.data.pairs import load_image_text_pairs

        return load_image_text_pairs
    raise AttributeError(f"module 'gcl_hf.data' has no attribute {name!r}")
