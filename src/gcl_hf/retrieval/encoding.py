"""Embed the rows of a retrieval dataset (queries or corpus) with a `GCLModel`: the dataset adapter of the
encoding engine (:mod:`gcl_hf.modeling.engine`).

The ``modality`` column (``"image"``, ``"text"``, ``"image,text"``; see
:class:`~gcl_hf.benchmarks.task.RetrievalTask`) is read once into the engine's vocabulary (``"image,text"`` is
``"fused"``), rows are grouped by modality into batches, and each batch is read, decoded and preprocessed inside
a DataLoader worker (``num_workers``), so images stay lazy (paths, bytes) until then and decoding overlaps the
forward passes. An ``"image"`` row with a non-empty ``frames`` list (CoVR's ``target="scores"`` corpus) is the
``frame_weights``-weighted sum of its frames' image embeddings, re-normalised. Output rows keep the dataset's
order; errors name the row, its id and the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from gcl_hf.benchmarks.task import ENCODER_MODALITIES
from gcl_hf.data.images import ImageLoadError, open_image
from gcl_hf.errors import RecordError
from gcl_hf.modeling.engine import Batch, embed_batches, plan_batches, process_batch, text_kwargs

__all__ = ["EncodingError", "dataset_modalities", "encode_dataset"]


class EncodingError(RecordError):
    """A dataset row cannot be encoded; the message names the row, its id and the field."""


def dataset_modalities(dataset: datasets.Dataset, row_numbers: np.ndarray | None = None) -> list[str]:
    """Each row's modality in the engine's vocabulary (``"image"``, ``"text"``, ``"fused"``), read from the
    ``modality`` column; an unknown value is an `EncodingError` naming the row (of the dataset ``dataset`` was
    selected from, through ``row_numbers``) and its id."""
    if "modality" not in dataset.column_names:
        raise EncodingError(f"dataset has no 'modality' column (columns: {dataset.column_names})", field="modality")
    column = dataset["modality"]
    out = [ENCODER_MODALITIES.get(m) for m in column]
    bad = [i for i, m in enumerate(out) if m is None]
    if bad:
        i = bad[0]
        label = f" (id {dataset[i]['id']!r})" if "id" in dataset.column_names else ""
        row = int(row_numbers[i]) if row_numbers is not None else i
        raise EncodingError(
            f"unknown modality {column[i]!r}; expected one of {tuple(ENCODER_MODALITIES)}"
            + (f" ({len(bad)} rows affected)" if len(bad) > 1 else ""),
            row=f"row {row}{label}", field="modality",
        )
    return out


class _Batches(Dataset):
    """Item ``b`` = batch ``b`` decoded and preprocessed (in a DataLoader worker): an engine `Batch`."""

    def __init__(self, dataset: datasets.Dataset, batches: list[tuple[str, np.ndarray]], processor: Any,
                 image_root: str | None, processor_kwargs: dict[str, Any], row_numbers: np.ndarray,
                 text_settings: dict[str, Any]):
        self.row_numbers = row_numbers  # the original dataset's row of each local row, for messages
        self.columns = [c for c in ("id", "text", "image", "frames", "frame_weights") if c in dataset.column_names]
        self.dataset = dataset.select_columns(self.columns)
        self.batches = batches
        self.processor = processor
        self.image_root = image_root
        self.processor_kwargs = processor_kwargs
        self.text_settings = text_settings

    def __len__(self) -> int:
        return len(self.batches)

    def _images(self, records: dict[str, list], rows: np.ndarray, ids: list, modality: str
                ) -> tuple[list[Any], tuple[torch.Tensor, torch.Tensor] | None]:
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
        pooling = None
        if len(images) != len(rows):
            pooling = (torch.tensor(segments), torch.tensor(seg_weights, dtype=torch.float32))
        return images, pooling

    def __getitem__(self, b: int) -> Batch:
        modality, local_rows = self.batches[b]
        records = self.dataset[local_rows.tolist()]
        rows = self.row_numbers[local_rows]
        ids = records.get("id", rows.tolist())
        texts = images = pooling = None
        if modality != "image":
            texts = records.get("text") or [None] * len(rows)
            for row, rid, text in zip(rows, ids, texts):
                if not isinstance(text, str):
                    raise EncodingError(f"a {modality!r} item needs a text, got {text!r}",
                                        row=f"row {int(row)} (id {rid!r})", field="text")
        if modality != "text":
            images, pooling = self._images(records, rows, ids, modality)
        inputs = process_batch(self.processor, modality, texts=texts, images=images,
                               text_settings=self.text_settings, processor_kwargs=self.processor_kwargs)
        return Batch(modality, torch.as_tensor(local_rows), inputs, pooling)


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
    processor call. Texts are truncated and padded as :func:`gcl_hf.modeling.engine.text_kwargs` says
    (``processor_kwargs["max_length"]`` / ``["padding"]`` override). Errors name the row, its id and the field.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    settings, rest = text_kwargs(model, processor, processor_kwargs)
    if device is not None:
        model.to(device)
    param = next(model.parameters(), None)
    all_rows = np.arange(len(dataset)) if rows is None else np.asarray(rows, dtype=np.int64)
    subset = dataset if rows is None else dataset.select(all_rows)
    batches = plan_batches(dataset_modalities(subset, all_rows), batch_size) if len(subset) else []
    loader = DataLoader(
        _Batches(subset, batches, processor, image_root, rest, all_rows, settings),
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=param is not None and param.device.type == "cuda",
        persistent_workers=False,
        collate_fn=lambda batch: batch,
    )
    with tqdm(total=len(subset), desc=desc, unit="item", disable=not show_progress) as bar:
        return embed_batches(model, loader, len(subset), out_device="cpu", out_dtype=torch.float32,
                             progress=bar.update)
