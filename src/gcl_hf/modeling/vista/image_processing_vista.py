"""`VistaImageProcessor` and `VistaProcessor`: VISTA's evaluation preprocessing, reproduced exactly.

The reference resizes the short side to ``image_size`` (bicubic, on the image in its own mode; the long side
``int(image_size * long / short)``), centre-crops with the top/left offsets ``int(round((size - crop) / 2))``
(Python's round: halves go to even, so a 3-pixel surplus starts the crop at 2, not 1), then converts to RGB,
scales to [0, 1] and normalises with the OpenAI CLIP mean/std — every step on the PIL image, in that order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from transformers import ProcessorMixin
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_base import BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling

__all__ = ["VistaImageProcessor", "VistaProcessor", "center_crop_box", "resized_size"]


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """``(width, height)`` after resizing the short side to ``short_side`` (the long side truncated)."""
    if width <= height:
        return short_side, int(short_side * height / width)
    return int(short_side * width / height), short_side


def center_crop_box(width: int, height: int, crop: int) -> tuple[int, int, int, int]:
    """PIL crop box ``(left, top, right, bottom)`` of a ``crop`` x ``crop`` centre crop (offsets rounded half
    to even). Images smaller than the crop are padded with zeros by PIL's crop."""
    top = int(round((height - crop) / 2.0))
    left = int(round((width - crop) / 2.0))
    return left, top, left + crop, top + crop


def _to_pil(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    from transformers.image_transforms import to_pil_image

    if hasattr(image, "detach"):  # a torch tensor
        image = image.detach().cpu().numpy()
    return to_pil_image(np.asarray(image))


class VistaImageProcessor(PilBackend):
    """Image → ``pixel_values`` ``[N, 3, image_size, image_size]`` (float32) as VISTA's reference computes them."""

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BICUBIC
    image_mean = list(OPENAI_CLIP_MEAN)
    image_std = list(OPENAI_CLIP_STD)
    size = {"shortest_edge": 224}
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True

    def _side(self) -> int:
        size = self.size["shortest_edge"] if "shortest_edge" in self.size else self.size["height"]
        return int(size)

    def preprocess_one(self, image: Any) -> np.ndarray:
        """One image → ``[3, crop, crop]`` float32."""
        image = _to_pil(image)
        crop = int(self.crop_size["height"])
        if self.do_resize:
            size = resized_size(*image.size, self._side())
            if size != image.size:
                image = image.resize(size, Image.Resampling(int(self.resample)))
        if self.do_center_crop and image.size != (crop, crop):
            image = image.crop(center_crop_box(*image.size, crop))
        if self.do_convert_rgb:
            image = image.convert("RGB")
        array = np.asarray(image, dtype=np.uint8).astype(np.float32)
        if array.ndim == 2:
            array = array[..., None]
        if self.do_rescale:
            array = array / np.float32(255)
        if self.do_normalize:
            array = (array - np.asarray(self.image_mean, dtype=np.float32)) / np.asarray(self.image_std,
                                                                                          dtype=np.float32)
        return np.ascontiguousarray(array.transpose(2, 0, 1))

    def preprocess(self, images: Any, return_tensors: str | None = None, **kwargs: Any) -> BatchFeature:
        images = self._prepare_images_structure(images)
        pixel_values = np.stack([self.preprocess_one(image) for image in images])
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)


class VistaProcessor(ProcessorMixin):
    """BGE's tokenizer + `VistaImageProcessor` (``AutoProcessor.from_pretrained`` of a converted directory)."""

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, **kwargs: Any) -> None:
        super().__init__(image_processor, tokenizer)
