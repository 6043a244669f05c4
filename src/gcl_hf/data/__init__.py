"""Training data: image–caption pairs from files or the Hub, image decoding, and the batch collator."""

from gcl_hf.data.collator import GCLCollator
from gcl_hf.data.images import ImageLoadError, open_image, resolve_image_path
from gcl_hf.data.errors import DataFormatError, DataSourceError, LoadReport, SkippedRecord
from gcl_hf.data.pairs import load_image_text_pairs

__all__ = [
    "DataFormatError", "DataSourceError", "GCLCollator", "ImageLoadError", "LoadReport", "SkippedRecord",
    "load_image_text_pairs", "open_image", "resolve_image_path",
]
