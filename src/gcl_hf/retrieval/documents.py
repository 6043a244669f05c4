"""Documents to index: a folder of images and ``.txt`` files paired by name, or records, as a ``Dataset`` with
the retrieval columns (``id``, ``text``, ``image``, ``modality``)."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets

from gcl_hf.benchmarks.task import ENCODER_MODALITIES
from gcl_hf.data.images import IMAGE_SUFFIXES
from gcl_hf.modeling.engine import infer_modality

__all__ = ["IMAGE_SUFFIXES", "documents_from_folder", "documents_from_records"]

_COLUMN_VALUE = {modality: value for value, modality in ENCODER_MODALITIES.items()}


def _modality(text: Any, image: Any) -> str:
    """The ``modality`` column value of a document (the engine's rule, in the column's vocabulary)."""
    return _COLUMN_VALUE[infer_modality(image, text)]


def documents_from_records(records: Sequence[Mapping[str, Any]]) -> datasets.Dataset:
    """Records ``{"id", "text", "image"}`` (``id`` defaults to the record's position, ``modality`` is inferred
    from which of ``text`` / ``image`` are given; images are paths, bytes or PIL images) as a ``Dataset``."""
    rows = []
    for n, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise TypeError(f"record {n}: expected a mapping with 'text' and/or 'image', got {type(record).__name__}")
        text, image = record.get("text"), record.get("image")
        try:
            modality = record.get("modality") or _modality(text, image)
        except ValueError:
            raise ValueError(f"record {n} (id {record.get('id', n)!r}): neither a text nor an image") from None
        if hasattr(image, "save") and not isinstance(image, (str, bytes)):  # PIL: keep it as PNG bytes
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            image = buffer.getvalue()
        if image is not None and not isinstance(image, (str, os.PathLike, bytes, bytearray)):
            raise TypeError(f"record {n} (id {record.get('id', n)!r}), field 'image': expected a path, bytes or a PIL "
                            f"image, got {type(image).__name__}")
        rows.append({"id": str(record.get("id", n)), "text": text if isinstance(text, str) else None,
                     "image": str(image) if isinstance(image, os.PathLike) else image, "modality": modality})
    if not rows:
        raise ValueError("no documents to index")
    if any(r["image"] is not None and not isinstance(r["image"], str) for r in rows):
        for r in rows:  # paths next to bytes: one column of {"bytes", "path"} dicts (what open_image reads)
            image = r["image"]
            r["image"] = None if image is None else {"bytes": None, "path": image} if isinstance(image, str) \
                else {"bytes": bytes(image), "path": None}
    return datasets.Dataset.from_list(rows)


def documents_from_folder(folder: str | os.PathLike) -> datasets.Dataset:
    """The documents of a folder: every image file and every ``.txt`` file, paired by their path without the
    suffix (``cats/01.jpg`` + ``cats/01.txt`` = one image+text document with id ``cats/01``). An image alone is an
    image document, a text alone a text document. Image paths are relative to ``folder``."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"document folder not found: {root}")
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        rel = path.relative_to(root)
        suffix = path.suffix.lower()
        if suffix not in IMAGE_SUFFIXES and suffix != ".txt":
            continue
        doc = docs.setdefault(rel.with_suffix("").as_posix(), {"text": None, "image": None})
        if suffix == ".txt":
            text = path.read_text(encoding="utf-8").strip()
            if not text:
                raise ValueError(f"{path}: empty text file (document {rel.with_suffix('').as_posix()!r})")
            doc["text"] = text
        elif doc["image"] is not None:
            raise ValueError(f"{root}: two images for document {rel.with_suffix('').as_posix()!r}: "
                             f"{doc['image']} and {rel.as_posix()}")
        else:
            doc["image"] = rel.as_posix()
    if not docs:
        raise ValueError(f"{root}: no documents (image files {', '.join(IMAGE_SUFFIXES)} or .txt files)")
    return datasets.Dataset.from_list([{"id": i, "text": d["text"], "image": d["image"],
                                        "modality": _modality(d["text"], d["image"])} for i, d in docs.items()])


def _as_documents(data: Any) -> tuple[datasets.Dataset, str | None]:
    """``(dataset, image root)`` of a Dataset, a list of records or a folder."""
    if isinstance(data, (str, os.PathLike)):
        return documents_from_folder(data), str(Path(data).resolve())
    if isinstance(data, datasets.Dataset):
        missing = [c for c in ("id",) if c not in data.column_names]
        if missing or not {"text", "image"} & set(data.column_names):
            raise ValueError(f"dataset needs the columns 'id' and 'text' and/or 'image' (has {data.column_names})")
        if "modality" not in data.column_names:
            data = data.map(lambda r: {"modality": _modality(r.get("text"), r.get("image"))})
        return data, None
    return documents_from_records(list(data)), None
