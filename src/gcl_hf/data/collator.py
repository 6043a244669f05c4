"""Records ``{image, text}`` → a model batch, decoded and tokenized in the dataloader workers.

:class:`GCLCollator` is the ``data_collator`` for :class:`~gcl_hf.training.trainer.GCLTrainer` (and any
``torch.utils.data.DataLoader``) over the lazy datasets of :mod:`gcl_hf.data`: it decodes
images with :func:`gcl_hf.data.images.open_image`, runs the backbone's own processor, and pads
captions only to the longest one in the batch (dynamic padding: short captions cost short
sequences), truncated to the backbone's maximum text length.

SigLIP text towers were trained on captions padded to a fixed ``max_length`` (64) and pool
the *last* position, so for them ``padding="max_length"`` is what the model expects; the
collator picks it automatically for SigLIP / SigLIP 2 processors and models. A ``GCLModel`` brings its
family's text settings (``model.family``, from :data:`gcl_hf.modeling.backbone.FAMILIES`); for a processor or a
plain backbone the SigLIP names decide.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from gcl_hf.data.errors import DataFormatError
from gcl_hf.data.images import ImageLoadError, open_image
from gcl_hf.errors import ErrorMode, check_errors_mode, note_details

__all__ = ["DEFAULT_MAX_LENGTH", "GCLCollator", "image_settings", "literal_special_tokens", "text_settings"]

logger = logging.getLogger(__name__)

#: Used when a tokenizer declares no limit (``model_max_length`` unset): CLIP's context length.
DEFAULT_MAX_LENGTH = 77
_UNSET_LIMIT = 1_000_000  # transformers uses VERY_LARGE_INTEGER (1e30) for "no limit"
_FIXED_LENGTH_FAMILIES = ("siglip",)  # without a GCLModel's family: text towers trained with max_length padding


def _tokenizer(processor: Any) -> Any:
    return getattr(processor, "tokenizer", processor)


@contextlib.contextmanager
def literal_special_tokens(processor: Any) -> Iterator[None]:
    """Texts are data: inside this block a literal ``<|endoftext|>`` (or any special token's text) in a caption is
    tokenized as characters, never as the special token itself, which would end the text there for CLIP-style
    pooling. The tokenizer still adds its own start/end tokens. Used by the collator and the encoding engine."""
    tokenizer = _tokenizer(processor)
    if not hasattr(tokenizer, "split_special_tokens"):
        yield
        return
    before = tokenizer.split_special_tokens
    tokenizer.split_special_tokens = True
    try:
        yield
    finally:
        tokenizer.split_special_tokens = before


def _tokenizer_limit(processor: Any) -> int | None:
    limit = getattr(_tokenizer(processor), "model_max_length", None)
    return int(limit) if isinstance(limit, int) and 0 < limit < _UNSET_LIMIT else None


def _is_fixed_length_family(processor: Any, model: Any = None) -> bool:
    names = [type(processor).__name__, type(_tokenizer(processor)).__name__]
    if model is not None:
        config = getattr(getattr(model, "backbone", model), "config", None)
        names.append(str(getattr(config, "model_type", "")))
    return any(name.lower().startswith(_FIXED_LENGTH_FAMILIES) for name in names)


def _model_family(model: Any) -> Any:
    """A ``GCLModel``'s family defaults (duck-typed: the data layer does not import modeling), else ``None``."""
    family = getattr(model, "family", None)
    return family if hasattr(family, "text_padding") else None


def _model_text_limit(model: Any) -> int | None:
    config = getattr(getattr(model, "backbone", model), "config", None)
    for cfg in (getattr(config, "text_config", None), config):
        limit = getattr(cfg, "max_position_embeddings", None)
        if isinstance(limit, int) and limit > 0:
            return limit
    return None


def image_settings(processor: Any) -> dict[str, Any]:
    """The image processor's own values of the image kwargs a processor class defaults at every call.

    A processor's ``__call__`` applies its class defaults over its image processor's settings (SigLIP 2's
    ``Siglip2Processor``: 16 px patches, at most 256 of them, whatever its image processor says); passing the image
    processor's values explicitly makes the image processor's configuration the one that counts."""
    defaults = getattr(type(processor), "images_kwargs", None)
    image_processor = getattr(processor, "image_processor", None)
    if not isinstance(defaults, dict) or image_processor is None:
        return {}
    return {key: getattr(image_processor, key) for key in defaults if getattr(image_processor, key, None) is not None}


def text_settings(model: Any, processor: Any, max_length: int | None = None,
                  padding: str | None = None) -> tuple[int, str]:
    """``(max_length, padding)`` for ``model``'s text tower: the smallest of its ``max_position_embeddings``, the
    tokenizer's limit and its family's training length (:data:`DEFAULT_MAX_LENGTH` when none is known), and its
    family's padding: ``"max_length"`` for SigLIP / SigLIP 2 (trained that way, at 64 tokens; they pool the last
    position), else ``"longest"``. A ``max_length`` given beyond the tower's positions is refused here rather
    than failing inside the model's forward."""
    positions = _model_text_limit(model)
    family = _model_family(model)
    if max_length is None:
        limits = [x for x in (positions, _tokenizer_limit(processor), getattr(family, "text_max_length", None))
                  if x is not None]
        max_length = min(limits) if limits else DEFAULT_MAX_LENGTH
    elif positions is not None and max_length > positions:
        raise ValueError(f"max_length {max_length} is more than the text tower's {positions} positions "
                         "(max_position_embeddings)")
    if padding is None and family is not None:
        padding = family.text_padding
    elif padding is None:
        padding = "max_length" if _is_fixed_length_family(processor, model) else "longest"
    return max_length, padding


@dataclass
class GCLCollator:
    """Turn a list of records ``{image_column: image, text_column: caption}`` into a batch.

    Returns the processor's tensors: ``pixel_values``, ``input_ids``, ``attention_mask``
    (plus any extra ones a processor makes, e.g. SigLIP 2's ``pixel_attention_mask``), and
    ``records`` (the records kept, in order) when ``return_records``.

    * Images may be ``PIL.Image``, numpy arrays, paths (relative ones resolve against
      ``image_root``), bytes or ``datasets.Image`` dicts; they are decoded in RGB.
    * ``max_length``: default = the tokenizer's ``model_max_length``
      (:data:`DEFAULT_MAX_LENGTH` if it declares none); :meth:`for_model` also caps it at the
      text tower's ``max_position_embeddings``. Longer captions are truncated (special tokens,
      e.g. CLIP's EOS used for pooling, are kept).
    * ``padding``: ``"longest"`` (dynamic, pad to the batch's longest caption) or
      ``"max_length"``; ``None`` picks ``"max_length"`` for SigLIP (how it was trained) and
      ``"longest"`` otherwise. ``pad_to_multiple_of`` rounds the padded length up (tensor cores).
    * ``errors="raise"``: a bad image raises :class:`~gcl_hf.data.images.ImageLoadError`, an empty
      or non-string caption :class:`~gcl_hf.data.DataFormatError`, both naming the record
      (its position in the batch and its ``id`` / ``__index__`` when present), the column
      and the file. ``errors="skip"``: the record is dropped with a warning and counted in
      ``skipped`` (per process: each dataloader worker counts its own).

    Picklable, so dataloader workers started with ``spawn`` / ``forkserver`` get a copy.
    """

    processor: Any
    image_column: str = "image"
    text_column: str = "text"
    image_root: str | os.PathLike | None = None
    max_length: int | None = None
    padding: Literal["longest", "max_length"] | None = None
    errors: ErrorMode = "raise"
    return_records: bool = False
    pad_to_multiple_of: int | None = None
    skipped: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        check_errors_mode(self.errors)
        if self.padding is None:
            self.padding = "max_length" if _is_fixed_length_family(self.processor) else "longest"
        if self.padding not in ("longest", "max_length"):
            raise ValueError(f"padding must be 'longest', 'max_length' or None, got {self.padding!r}")
        if self.max_length is None:
            self.max_length = _tokenizer_limit(self.processor)
            if self.max_length is None:
                self.max_length = DEFAULT_MAX_LENGTH
                logger.warning("the tokenizer declares no length limit: captions are truncated to %d tokens (CLIP's "
                               "context); GCLCollator.for_model(model, processor) reads the text tower's own limit",
                               DEFAULT_MAX_LENGTH)
        if not isinstance(self.max_length, int) or self.max_length < 2:
            raise ValueError(f"max_length must be an int >= 2, got {self.max_length!r}")

    @classmethod
    def for_model(cls, model: Any, processor: Any, **kwargs: Any) -> GCLCollator:
        """A collator whose ``max_length`` fits ``model``'s text tower (a backbone or a
        ``GCLModel``) and whose padding follows its family (``max_length`` for SigLIP)."""
        kwargs["max_length"], kwargs["padding"] = text_settings(model, processor, kwargs.get("max_length"),
                                                                kwargs.get("padding"))
        return cls(processor, **kwargs)

    def __repr__(self) -> str:
        return (f"GCLCollator(processor={type(self.processor).__name__}, image_column={self.image_column!r}, "
                f"text_column={self.text_column!r}, max_length={self.max_length}, padding={self.padding!r}, "
                f"errors={self.errors!r}, skipped={self.skipped})")

    def _where(self, index: int, record: Any) -> str:
        where = f"batch record {index}"
        if isinstance(record, dict):
            for key in ("id", "__index__"):
                if record.get(key) is not None:
                    where += f", {key} {record[key]!r}"
        return where

    def _load(self, index: int, record: Any) -> tuple[Any, str]:
        where = self._where(index, record)
        if not isinstance(record, dict):
            raise DataFormatError(where, None, f"expected a dict record, got {type(record).__name__}")
        for column in (self.image_column, self.text_column):
            if column not in record:
                raise DataFormatError(where, column, f"column missing (record has {sorted(record)})")
        text = record[self.text_column]
        if text is None:
            raise DataFormatError(where, self.text_column, "missing caption (None)")
        if not isinstance(text, str):
            raise DataFormatError(where, self.text_column, f"caption must be a string, got {type(text).__name__}")
        if not text.strip():
            raise DataFormatError(where, self.text_column, "empty caption")
        if "\x00" in text:
            raise DataFormatError(where, self.text_column,
                                  "caption contains a NUL character (binary data, or a UTF-16 file read as UTF-8?)")
        image = open_image(record[self.image_column], row=where, column=self.image_column, root=self.image_root)
        return image, text

    def __call__(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        if not records:
            raise ValueError("GCLCollator got an empty batch")
        images, texts, kept = [], [], []
        for index, record in enumerate(records):
            try:
                image, text = self._load(index, record)
            except (ImageLoadError, DataFormatError) as exc:
                if self.errors == "raise":
                    if torch.utils.data.get_worker_info() is not None:  # the fields must reach the main process
                        note_details(exc)
                    raise
                self.skipped += 1
                logger.warning("skipping %s (%d skipped so far in this process)", exc, self.skipped)
                continue
            images.append(image)
            texts.append(text)
            kept.append(record)
        if not kept:
            raise ValueError(f"all {len(records)} records of the batch were skipped (errors='skip'); "
                             "see the warnings above")
        with literal_special_tokens(self.processor):
            batch = self.processor(
                images=images,
                text=texts,
                padding=self.padding,
                truncation=True,
                max_length=self.max_length,
                pad_to_multiple_of=self.pad_to_multiple_of,
                return_tensors="pt",
                **image_settings(self.processor),
            )
        out = {key: value for key, value in batch.items() if isinstance(value, torch.Tensor)}
        if self.return_records:
            out["records"] = kept
        return out
