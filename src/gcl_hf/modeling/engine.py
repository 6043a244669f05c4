"""The one encoding engine: items → modality → batches → processor → :meth:`GCLModel.embed` → rows in order.

Every encoding path runs it: ``GCLModel.encode`` (a list of raw items, decoded in this process), the dataset
path :func:`gcl_hf.retrieval.encoding.encode_dataset` (batches decoded in DataLoader workers), the index's
queries, the mteb glue, the trainer's evaluation and the demo. What is shared:

* :func:`infer_modality`: what an item is, from the image and text it carries;
* :func:`plan_batches`: rows grouped by modality (image, text, fused) and cut into batches;
* :func:`text_kwargs`: texts truncated and padded as the training collator makes them;
* :func:`process_batch`: one processor call for one batch;
* :func:`embed_batches`: ``model.embed`` per batch, with optional frame pooling, rows written back in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from gcl_hf.losses.settings import MODALITY_NAMES, Modality

__all__ = ["Batch", "embed_batches", "encode_items", "infer_modality", "plan_batches", "process_batch",
           "text_kwargs"]


def infer_modality(image: Any, text: Any) -> Modality:
    """``"fused"`` for an item with an image and a non-blank text, ``"image"`` or ``"text"`` for one of them; a
    `ValueError` when it has neither (the caller names the item)."""
    has_image = image is not None and not (isinstance(image, str) and not image)
    has_text = isinstance(text, str) and bool(text.strip())
    if has_image and has_text:
        return "fused"
    if has_image:
        return "image"
    if has_text:
        return "text"
    raise ValueError("neither a text nor an image")


def plan_batches(modalities: Sequence[str], batch_size: int) -> list[tuple[Modality, np.ndarray]]:
    """``[(modality, row indices)]``: the rows of each modality (image, text, fused order), ``batch_size`` at a
    time, each batch one modality (one forward)."""

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected a positive int")
    kinds = np.asarray(modalities, dtype=object)
    batches = []
    for modality in MODALITY_NAMES:
        rows = np.nonzero(kinds == modality)[0]
        batches += [(modality, rows[s:s + batch_size]) for s in range(0, len(rows), batch_size)]
    return batches


def text_kwargs(model: Any, processor: Any, processor_kwargs: dict[str, Any] | None = None
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(text settings, other processor kwargs)``: texts cut at the text tower's positions (or the tokenizer's
    limit when smaller) and padded as the training collator pads them (``max_length`` for SigLIP); a
    ``max_length`` / ``padding`` in ``processor_kwargs`` overrides (up to the positions)."""
    from gcl_hf.data.collator import text_settings

    rest = dict(processor_kwargs or {})
    max_length, padding = text_settings(model, processor, rest.pop("max_length", None), rest.pop("padding", None))
    return {"truncation": True, "max_length": max_length, "padding": padding}, rest


def process_batch(processor: Any, modality: Modality, *, texts: Sequence[str] | None = None,
                  images: Sequence[Any] | None = None, text_settings: dict[str, Any] | None = None,
                  processor_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The processor's output for one batch of ``modality`` items (texts for text/fused, decoded images for
    image/fused)."""
    kwargs: dict[str, Any] = {"return_tensors": "pt"}
    if modality != "image":
        kwargs.update(text=list(texts or []), **(text_settings or {"truncation": True, "padding": True}))
    from gcl_hf.data.collator import image_settings, literal_special_tokens

    if modality != "text":
        kwargs["images"] = list(images or [])
        kwargs.update(image_settings(processor))
    kwargs.update(processor_kwargs or {})

    with literal_special_tokens(processor):
        return dict(processor(**kwargs))


@dataclass
class Batch:
    """One processed batch: its ``modality``, the output ``rows`` it fills and the processor ``inputs``;
    ``pooling`` = ``(segments, weights)`` when several images make one row (CoVR's frames: row ``segments[i]``
    gets ``weights[i]`` × image ``i``, then re-normalised)."""

    modality: Modality
    rows: torch.Tensor
    inputs: dict[str, Any]
    pooling: tuple[torch.Tensor, torch.Tensor] | None = None


def embed_batches(model: Any, batches: Iterable[Batch], num_rows: int, *, normalize: bool = True,
                  out_device: torch.device | str | None = None, out_dtype: torch.dtype | None = None,
                  progress: Callable[[int], Any] | None = None) -> torch.Tensor:
    """``[num_rows, D]``: ``model.embed`` of each batch written to its rows (model in eval mode, no grad).
    The result is on ``out_device`` / ``out_dtype`` (default: the model's)."""
    param = next(model.parameters(), None)
    device = torch.device(out_device) if out_device is not None else (param.device if param is not None else "cpu")
    dtype = out_dtype or (param.dtype if param is not None else torch.float32)
    out = torch.empty(num_rows, int(getattr(model, "embedding_dim", 0) or 0), device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in batches:
                emb = model.embed(batch.inputs, batch.modality, normalize=normalize).to(device, dtype)
                if batch.pooling is not None:  # several frames per row: weighted sum per row, re-normalised
                    segments, weights = (t.to(device) for t in batch.pooling)
                    pooled = torch.zeros(len(batch.rows), emb.shape[1], device=device, dtype=dtype)
                    emb = pooled.index_add_(0, segments, emb * weights[:, None].to(dtype))
                    emb = torch.nn.functional.normalize(emb, dim=-1) if normalize else emb
                if out.shape[1] != emb.shape[1]:
                    out = torch.empty(num_rows, emb.shape[1], device=device, dtype=dtype)
                out[batch.rows.to(device)] = emb
                if progress is not None:
                    progress(len(batch.rows))
    finally:
        model.train(was_training)
    return out


def encode_items(model: Any, processor: Any, items: Sequence[tuple[Modality, Any, str | None]], *,
                 batch_size: int = 32, processor_kwargs: dict[str, Any] | None = None,
                 image_root: str | None = None, normalize: bool = True, show_progress: bool = False,
                 desc: str = "encoding", where: Callable[[int], str] = lambda i: f"inputs[{i}]") -> torch.Tensor:
    """``[N, D]`` (on the model's device and dtype) of ``(modality, image, text)`` items, decoded here, batch by
    batch (memory holds one batch of images); an image that cannot be read raises naming ``where(i)``."""
    from gcl_hf.data.images import open_image

    settings, rest = text_kwargs(model, processor, processor_kwargs)

    def batches() -> Iterable[Batch]:
        for modality, rows in plan_batches([m for m, _, _ in items], batch_size):
            texts = [items[i][2] for i in rows] if modality != "image" else None
            images = ([open_image(items[i][1], row=where(int(i)), root=image_root) for i in rows]
                      if modality != "text" else None)
            inputs = process_batch(processor, modality, texts=texts, images=images, text_settings=settings,
                                   processor_kwargs=rest)
            yield Batch(modality, torch.as_tensor(rows), inputs)

    with tqdm(total=len(items), desc=desc, unit="item", disable=not show_progress) as bar:
        return embed_batches(model, batches(), len(items), normalize=normalize, progress=bar.update)
