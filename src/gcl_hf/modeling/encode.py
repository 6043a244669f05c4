"""`GCLModel.encode`: embed raw texts, images and fused image+text items in one call.

One list may mix the three kinds; the items are grouped by modality and each group runs through the
model in batches (one forward per batch), and the rows come back in input order. What an item is:

* ``str`` → text, unless it ends with an image extension (``.jpg``, ``.png``, ...): then it is an image
  path (use ``{"text": "holiday.jpg"}`` to embed such a string as text);
* ``PIL.Image.Image``, ``os.PathLike`` (``pathlib.Path``) or a numpy array → image;
* ``{"image": ..., "text": ...}`` or ``(image, text)`` → fused; a dict with only one of the keys is that
  modality.

The processor (tokenizer + image processor) is the one attached to the model (``model.processor = ...``,
which ``save_pretrained`` saves beside the weights), else the one saved with the model, else the base
model's; it is cached on the model once found.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from gcl_hf.data.images import IMAGE_SUFFIXES
from gcl_hf.modeling.engine import infer_modality
from gcl_hf.modeling.loading import ProcessorNotFoundError

__all__ = ["IMAGE_EXTENSIONS", "EncodeMixin", "ProcessorNotFoundError", "classify_input", "find_processor"]


#: A string ending with one of these (case-insensitive) is read as an image path, not as text.
IMAGE_EXTENSIONS = IMAGE_SUFFIXES  # one list, owned by gcl_hf.data.images
_EXPECTED = "expected str, PIL image, path, dict or (image, text) tuple"


def _is_image(value: Any) -> bool:
    from PIL import Image

    if isinstance(value, (Image.Image, os.PathLike, np.ndarray)):
        return True
    return isinstance(value, str) and "\n" not in value and value.lower().endswith(IMAGE_EXTENSIONS)


def _is_image_source(value: Any) -> bool:
    """What an explicit image slot (``{"image": ...}``, ``(image, text)``) takes: also any path string, encoded
    bytes and ``datasets.Image`` dicts ``{"bytes", "path"}``."""
    return _is_image(value) or isinstance(value, (str, bytes, dict))


def _type_name(value: Any) -> str:
    from PIL import Image

    return "PIL image" if isinstance(value, Image.Image) else type(value).__name__


def classify_input(item: Any, index: int) -> tuple[str, Any, str | None]:
    """``(modality, image, text)`` of one ``encode`` input; a `TypeError` / `ValueError` names ``inputs[index]``."""
    where = f"inputs[{index}]"
    if isinstance(item, dict):
        unknown = sorted(str(k) for k in item if k not in ("image", "text"))
        if unknown or not item:
            raise ValueError(f"{where}: a dict item takes the keys 'image' and/or 'text', got {sorted(map(str, item))}")
        image, text = item.get("image"), item.get("text")
        if "image" in item and image is None:
            raise ValueError(f"{where}['image']: image is missing (None)")
        if "text" in item and not isinstance(text, str):
            raise TypeError(f"{where}['text']: expected str, got {_type_name(text)}")
        if image is not None and not _is_image_source(image):
            raise TypeError(f"{where}['image']: expected a PIL image, path or array, got {_type_name(image)}")
        try:
            return infer_modality(image, text), image, text
        except ValueError:
            raise ValueError(f"{where}: neither a text nor an image (a blank text is no text)") from None
    if isinstance(item, tuple):
        if len(item) != 2:
            raise ValueError(f"{where}: a fused item is an (image, text) tuple, got a tuple of {len(item)} items")
        image, text = item
        if image is None or not _is_image_source(image):
            raise TypeError(f"{where}[0]: expected a PIL image, path or array, got {_type_name(image)}")
        if not isinstance(text, str):
            raise TypeError(f"{where}[1]: expected str, got {_type_name(text)}")
        return "fused", image, text
    if _is_image(item):
        return "image", item, None
    if isinstance(item, str):
        return "text", None, item
    raise TypeError(f"{where}: {_EXPECTED}, got {_type_name(item)}")


def _check_image_files(items: list[tuple[str, Any, str | None]]) -> None:
    from gcl_hf.data.images import ImageLoadError

    for i, (_, image, _) in enumerate(items):
        if isinstance(image, (str, os.PathLike)) and not os.path.isfile(image):
            reason = "is a directory" if os.path.isdir(image) else "file not found"
            raise ImageLoadError(reason, row=f"inputs[{i}]", path=os.fspath(image))


def find_processor(model: Any) -> Any:
    """:func:`gcl_hf.modeling.loading.find_processor` of ``model``, attached to the model once found (so the next
    call does not load it again)."""
    from gcl_hf.modeling import loading

    processor = loading.find_processor(model)
    model.processor = processor
    return processor


class EncodeMixin:
    """Adds :meth:`encode` (raw inputs → embeddings) and an attachable ``processor`` to `GCLModel`."""

    @property
    def processor(self) -> Any | None:
        """The processor ``encode`` uses and ``save_pretrained`` saves beside the model (``None`` if unset)."""
        return self.__dict__.get("_gcl_processor")

    @processor.setter
    def processor(self, value: Any | None) -> None:
        self.__dict__["_gcl_processor"] = value

    def encode(
        self,
        inputs: Sequence[Any] | Any,
        *,
        processor: Any | None = None,
        batch_size: int = 32,
        convert_to: Literal["numpy", "torch"] = "numpy",
        normalize: bool = True,
        show_progress_bar: bool | None = None,
        device: str | torch.device | None = None,
    ) -> np.ndarray | torch.Tensor:
        """Embed ``inputs`` (texts, images, fused items, mixed in one list; see the module docstring) → ``[N, D]``.

        Rows follow the input order and equal ``encode_text`` / ``encode_image`` / ``encode_fused`` on the
        processor's outputs. Texts are truncated to the text tower's maximum length. ``normalize=False`` returns
        the un-normalised projections (for fused items: the fusion vector before its final normalisation).
        ``convert_to="numpy"`` gives float32 on the CPU, ``"torch"`` a tensor on the compute device.
        ``device`` moves the model there first. A single item (not in a list) gives a ``[1, D]`` result. The
        progress bar shows by default when there are more than 8 batches.
        """
        from gcl_hf.modeling.engine import encode_items

        if convert_to not in ("numpy", "torch"):
            raise ValueError(f"convert_to={convert_to!r}: expected 'numpy' or 'torch'")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: expected a positive int")
        if isinstance(inputs, np.ndarray) and inputs.dtype.kind in "UO":
            inputs = inputs.tolist()  # an array of strings (e.g. a pandas column), not an image
        elif isinstance(inputs, (str, dict, tuple)) or _is_image(inputs):
            inputs = [inputs]
        items = [classify_input(item, i) for i, item in enumerate(inputs)]
        _check_image_files(items)  # fail before any forward, not hours into a large run
        processor = processor if processor is not None else find_processor(self)
        if device is not None:
            self.to(device)
        show = -(-len(items) // batch_size) > 8 if show_progress_bar is None else show_progress_bar
        out = encode_items(self, processor, items, batch_size=batch_size, normalize=normalize, show_progress=show)
        return out if convert_to == "torch" else out.float().cpu().numpy()
