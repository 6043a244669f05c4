"""Documents to index: a folder of images and ``.txt`` files paired by name, or records, as a ``Dataset`` with
the retrieval columns (``id``, ``text``, ``image``, ``modality``)."""

from __future__ import annotations

import io
import logging
import os
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets

from gcl_hf.benchmarks.task import ENCODER_MODALITIES
from gcl_hf.data.images import IMAGE_SUFFIXES
from gcl_hf.errors import RecordError
from gcl_hf.modeling.engine import infer_modality

__all__ = ["IMAGE_SUFFIXES", "check_ids", "documents_from_folder", "documents_from_records"]

logger = logging.getLogger(__name__)

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
        if "id" in record and (record["id"] is None or not str(record["id"]).strip()):
            raise ValueError(f"record {n}: no id ({record['id']!r}); give every document a unique id")
        rows.append({"id": str(record.get("id", n)), "text": text if isinstance(text, str) else None,
                     "image": str(image) if isinstance(image, os.PathLike) else image, "modality": modality})
    if not rows:
        raise ValueError("no documents to index")
    check_ids([r["id"] for r in rows], "records")
    if any(r["image"] is not None and not isinstance(r["image"], str) for r in rows):
        for r in rows:  # paths next to bytes: one column of {"bytes", "path"} dicts (what open_image reads)
            image = r["image"]
            r["image"] = None if image is None else {"bytes": None, "path": image} if isinstance(image, str) \
                else {"bytes": bytes(image), "path": None}
    return datasets.Dataset.from_list(rows)


def _walk(root: Path) -> tuple[list[Path], dict[str, list[str]]]:
    """The visible files under ``root`` (hidden files and folders left out, like ``.git/``) and what was skipped
    and why: symlinks are followed only to files inside ``root``; symlinked folders are not walked."""
    inside = root.resolve()
    files: list[Path] = []
    skipped: dict[str, list[str]] = {}
    for current, dirs, names in os.walk(root, followlinks=False):
        here = Path(current)
        for d in sorted(dirs):
            if not d.startswith(".") and (here / d).is_symlink():
                skipped.setdefault("symlinked folder (not followed)", []).append((here / d).relative_to(root).as_posix())
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (here / d).is_symlink())
        for name in sorted(names):
            path = here / name
            if name.startswith("."):
                continue
            if path.is_symlink():
                target = path.resolve()
                if not target.is_file() or not target.is_relative_to(inside):
                    skipped.setdefault("symlink to a file outside the folder", []).append(
                        path.relative_to(root).as_posix())
                    continue
            if path.is_file():
                files.append(path)
    return sorted(files), skipped


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # a BOM is not part of the text
    except UnicodeDecodeError as exc:
        raise RecordError(f"not valid UTF-8: byte 0x{data[exc.start]:02x} at byte offset {exc.start} (save the file "
                          "as UTF-8)", source=_shown(path)) from None


def _shown(path: Path) -> str:
    """A path as printable text (bytes of a name that is not UTF-8 shown as \\x.. escapes)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def documents_from_folder(folder: str | os.PathLike) -> datasets.Dataset:
    """The documents of a folder: every image file and every ``.txt`` file, paired by their path without the
    suffix (``cats/01.jpg`` + ``cats/01.txt`` = one image+text document with id ``cats/01``). An image alone is an
    image document, a text alone a text document. Image paths are relative to ``folder``.

    Hidden files and folders are left out; a symlink is followed only to a file inside ``folder`` (others, and
    symlinked folders, are skipped with a warning counting them and why). Texts are read as UTF-8 (a BOM dropped).
    Ids that differ only in case or Unicode form (``a.txt`` + ``a.TXT``, NFC + NFD) are an error: they name one
    document on many file systems."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"document folder not found: {root}")
    files, skipped = _walk(root)
    if skipped:
        logger.warning("%s: skipped %d entr%s: %s", root, sum(len(v) for v in skipped.values()),
                       "y" if sum(len(v) for v in skipped.values()) == 1 else "ies",
                       "; ".join(f"{len(v)} {why} ({', '.join(v[:3])}{', ...' if len(v) > 3 else ''})"
                                 for why, v in skipped.items()))
    docs: dict[str, dict[str, Any]] = {}
    ids_by_key: dict[str, str] = {}
    seen: dict[tuple[str, str], str] = {}
    for path in files:
        rel = path.relative_to(root)
        suffix = path.suffix.lower()
        if suffix not in IMAGE_SUFFIXES and suffix != ".txt":
            continue
        try:
            rel.as_posix().encode("utf-8")
        except UnicodeEncodeError:
            raise RecordError("the file name is not valid UTF-8; rename the file", source=_shown(path)) from None
        doc_id = rel.with_suffix("").as_posix()
        kind = "text" if suffix == ".txt" else "image"
        key = unicodedata.normalize("NFC", doc_id).casefold()
        known = ids_by_key.setdefault(key, doc_id)
        if known != doc_id:
            raise ValueError(f"{root}: documents {known!r} and {doc_id!r} differ only in case or Unicode form "
                             "(one document on many file systems); rename one")
        other = seen.get((kind, key))
        if other is not None:
            raise ValueError(f"{root}: two {kind}s for document {doc_id!r}: {other} and {rel.as_posix()} (rename "
                             "one; names that differ only in case are one file on many file systems)")
        seen[(kind, key)] = rel.as_posix()
        doc = docs.setdefault(doc_id, {"text": None, "image": None})
        if kind == "text":
            text = _read_text(path).strip()
            if not text:
                raise ValueError(f"{path}: empty text file (document {doc_id!r})")
            doc["text"] = text
        else:
            doc["image"] = rel.as_posix()
    if not docs:
        raise ValueError(f"{root}: no documents (image files {', '.join(IMAGE_SUFFIXES)} or .txt files)")
    return datasets.Dataset.from_list([{"id": i, "text": d["text"], "image": d["image"],
                                        "modality": _modality(d["text"], d["image"])} for i, d in docs.items()])


def check_ids(ids: Sequence[Any], source: str = "documents") -> None:
    """Every id present (not None/empty) and unique: a search result names one document."""
    seen: dict[str, int] = {}
    for n, value in enumerate(ids):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError(f"{source}: row {n} has no id ({value!r}); give every document a unique id")
        key = str(value)
        if key in seen:
            raise ValueError(f"{source}: rows {seen[key]} and {n} have the same id {key!r}; ids must be unique")
        seen[key] = n


def as_documents(data: Any) -> tuple[datasets.Dataset, str | None]:
    """``(dataset, image root)`` of a Dataset, a list of records or a folder."""
    if isinstance(data, (str, os.PathLike)):
        return documents_from_folder(data), str(Path(data).resolve())
    if isinstance(data, datasets.Dataset):
        missing = [c for c in ("id",) if c not in data.column_names]
        if missing or not {"text", "image"} & set(data.column_names):
            raise ValueError(f"dataset needs the columns 'id' and 'text' and/or 'image' (has {data.column_names})")
        if len(data) == 0:
            raise ValueError("no documents to index (the dataset is empty)")
        check_ids(data.select_columns(["id"]).with_format(None)["id"], "dataset")
        if "modality" not in data.column_names:
            data = data.map(lambda r: {"modality": _modality(r.get("text"), r.get("image"))})
        return data, None
    return documents_from_records(list(data)), None
