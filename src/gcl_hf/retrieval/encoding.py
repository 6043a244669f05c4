"""Embed the rows of a retrieval dataset (queries or corpus) with a `GCLModel`.

Rows are grouped by modality: ``"image"`` rows go through ``model.encode_image``, ``"text"``
through ``model.encode_text`` and ``"image,text"`` (fused) through ``model.encode_fused``. An
``"image"`` row with a non-empty ``frames`` list (CoVR's ``target="scores"`` corpus) is embedded as
the ``frame_weights``-weighted sum of its frames' image embeddings, re-normalised (CoVR's
score-weighted target pooling). Each
batch is read, decoded and preprocessed inside a DataLoader worker (``num_workers``), so images
stay lazy (paths, bytes) until then and decoding overlaps the forward passes. Output rows keep
the dataset's order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from gcl_hf.data.collator import text_settings
from gcl_hf.data.images import ImageLoadError, open_image
from gcl_hf.errors import RecordError

__all__ = ["EncodingError", "encode_dataset", "modality_groups"]

_MODALITIES = ("image", "text", "image,text")


class EncodingError(RecordError):
    """A dataset row cannot be encoded; the message names the row, its id and the field."""


def modality_groups(dataset: datasets.Dataset, row_numbers: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Row indices of each modality present in ``dataset`` (``{"image": [...], ...}``), in order.

    ``row_numbers`` maps ``dataset``'s rows to the rows of the dataset it was selected from, for messages.
    """
    if "modality" not in dataset.column_names:
        raise EncodingError(f"dataset has no 'modality' column (columns: {dataset.column_names})", field="modality")
    modality = np.asarray(dataset["modality"], dtype=object)
    bad = [i for i, m in enumerate(modality) if m not in _MODALITIES]
    if bad:
        ids = dataset["id"] if "id" in dataset.column_names else None
        i = bad[0]
        label = f" (id {ids[i]!r})" if ids is not None else ""
        row = int(row_numbers[i]) if row_numbers is not None else i
        raise EncodingError(
            f"unknown modality {modality[i]!r}; expected one of {_MODALITIES}"
            + (f" ({len(bad)} rows affected)" if len(bad) > 1 else ""),
            row=f"row {row}{label}", field="modality",
        )
    return {m: np.nonzero(modality == m)[0] for m in _MODALITIES if (modality == m).any()}


class _Batches(Dataset):
    """Item ``b`` = batch ``b`` fully preprocessed: ``(modality, row indices, processor output)``."""

    def __init__(self, dataset: datasets.Dataset, batches: list[tuple[str, np.ndarray]], processor: Any,
                 image_root: str | None, processor_kwargs: dict[str, Any], row_numbers: np.ndarray,
                 text_kwargs: dict[str, Any] | None = None):
        self.row_numbers = row_numbers  # the original dataset's row of each local row, for messages
        self.columns = [c for c in ("id", "text", "image", "frames", "frame_weights") if c in dataset.column_names]
        self.dataset = dataset.select_columns(self.columns)
        self.batches = batches
        self.processor = processor
        self.image_root = image_root
        self.processor_kwargs = processor_kwargs
        self.text_kwargs = text_kwargs or {"truncation": True, "padding": True}

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int) -> tuple[str, torch.Tensor, dict[str, torch.Tensor], Any]:
        modality, local_rows = self.batches[b]
        records = self.dataset[local_rows.tolist()]
        rows = self.row_numbers[local_rows]
        ids = records.get("id", rows.tolist())
        kwargs: dict[str, Any] = {"return_tensors": "pt"}
        pooling = None
        if "text" in modality:
            texts = records.get("text") or [None] * len(rows)
            for row, rid, text in zip(rows, ids, texts):
                if not isinstance(text, str):
                    raise EncodingError(f"a {modality!r} item needs a text, got {text!r}",
                                        row=f"row {int(row)} (id {rid!r})", field="text")
            kwargs.update(text=list(texts), **self.text_kwargs)
        if "image" in modality:
            sources = records.get("image") or [None] * len(rows)
            frames = records.get("frames") if modality == "image" else None
            weights = records.get("frame_weights") if frames is not None else None
            images, segments, seg_weights = [], [], []
            for n, (row, rid, src) in enumerate(zip(rows, ids, sources)):
                row_frames = frames[n] if frames is not None and frames[n] else None
                field = "frames" if row_frames else "image"
                try:
                    for f, item in enumerate(row_frames or [src]):
                        images.append(open_image(item, row=int(row), column=field, root=self.image_root))
                        segments.append(n)
                        seg_weights.append(float(weights[n][f]) if row_frames and weights and weights[n] else
                                           1.0 / len(row_frames or [src]))
                except ImageLoadError as exc:
                    raise EncodingError(exc.reason, row=f"row {int(row)} (id {rid!r})", field=field,
                                        path=exc.path) from exc
                except IndexError:
                    raise EncodingError(f"{len(weights[n])} weights for {len(row_frames)} frames",
                                        row=f"row {int(row)} (id {rid!r})", field="frame_weights") from None
            kwargs["images"] = images
            if len(images) != len(rows):
                pooling = (torch.tensor(segments), torch.tensor(seg_weights, dtype=torch.float32))
        kwargs.update(self.processor_kwargs)
        inputs = self.processor(**kwargs)
        return modality, torch.as_tensor(local_rows), dict(inputs), pooling


def _model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters(), None)
    if param is None:
        return torch.device("cpu"), torch.float32
    return param.device, param.dtype


def encode_dataset(
    model: Any,
    processor: Any,
    dataset: datasets.Dataset,
    *,
    image_root: str | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    rows: Sequence[int] | np.ndarray | None = None,
    processor_kwargs: dict[str, Any] | None = None,
    show_progress: bool = True,
    desc: str = "encoding",
) -> torch.Tensor:
    """L2-normalised embeddings ``[len(rows), D]`` (float32, CPU) of ``dataset``'s rows, in order.

    ``dataset`` has the :class:`~gcl_hf.benchmarks.task.RetrievalTask` columns ``id``, ``text``,
    ``image`` (path relative to ``image_root``, bytes, ``datasets.Image`` dict or PIL image) and
    ``modality``. ``rows`` restricts encoding to those row indices (default: all). ``model`` needs
    :meth:`~gcl_hf.GCLModel.embed` (a :class:`~gcl_hf.GCLModel`) and is used on
    ``device`` (default: where its parameters are; given, the model is moved there). ``num_workers``
    DataLoader workers decode images and run ``processor``; ``processor_kwargs`` are added to each
    processor call. Texts are truncated to the text tower's positions (or the tokenizer's limit when smaller;
    ``processor_kwargs["max_length"]`` overrides, up to the positions) and padded as the training collator pads
    them (``max_length`` for SigLIP, whose last-position pooling needs it; ``processor_kwargs["padding"]``
    overrides). Errors name the row, its id and the field.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    processor_kwargs = dict(processor_kwargs or {})
    # texts as the training collator makes them: cut at the text tower's positions (not only at the tokenizer's
    # limit, which may be unset), and padded to max_length for SigLIP, whose last-position pooling needs it
    max_length, padding = text_settings(model, processor, processor_kwargs.pop("max_length", None),
                                        processor_kwargs.pop("padding", None))
    text_kwargs = {"truncation": True, "max_length": max_length, "padding": padding}
    if device is not None:
        model.to(device)
    device, _ = _model_device_dtype(model)
    all_rows = np.arange(len(dataset)) if rows is None else np.asarray(rows, dtype=np.int64)
    subset = dataset if rows is None else dataset.select(all_rows)
    groups = modality_groups(subset, all_rows) if len(subset) else {}
    batches = [
        (modality, idx[s:s + batch_size]) for modality, idx in groups.items() for s in range(0, len(idx), batch_size)
    ]
    loader = DataLoader(
        _Batches(subset, batches, processor, image_root, processor_kwargs, all_rows, text_kwargs),
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    out: torch.Tensor | None = None
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(subset), desc=desc, unit="item", disable=not show_progress) as bar:
            for modality, idx, inputs, pooling in loader:
                emb = model.embed(inputs, "fused" if modality == "image,text" else modality).float().cpu()
                if pooling is not None:  # several frames per row: weighted sum per row, re-normalised
                    segments, weights = pooling
                    pooled = torch.zeros(len(idx), emb.shape[1]).index_add_(0, segments, emb * weights[:, None])
                    emb = torch.nn.functional.normalize(pooled, dim=-1)
                if out is None:
                    out = torch.empty(len(subset), emb.shape[1], dtype=torch.float32)
                out[idx] = emb
                bar.update(len(idx))
    finally:
        model.train(was_training)
    if out is None:
        dim = getattr(model, "embedding_dim", 0)
        out = torch.empty(0, dim, dtype=torch.float32)
    return out
