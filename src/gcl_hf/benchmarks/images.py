"""Benchmark images: load-time existence checks and decoding with file/line/field errors.

Decoding itself is :func:`gcl_hf.data.images.open_image` (the package's one image decoder); this
module turns its :class:`~gcl_hf.data.images.ImageLoadError` into a :class:`BenchmarkFormatError`
that names the benchmark file, line/row and field the image came from.
"""

from __future__ import annotations

import os
from typing import Any

from PIL import Image

from gcl_hf.data.images import ImageLoadError, open_image, resolve_image_path
from gcl_hf.benchmarks.errors import BenchmarkFormatError

__all__ = ["check_image_file", "load_image", "load_task_image"]


def load_image(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    file: Any = None,
    line: int | None = None,
    row: int | None = None,
    field: str | None = "image",
    item_id: str | None = None,
) -> Image.Image:
    """Decode the image at ``path`` (relative to ``image_root``) into an RGB ``PIL.Image``.

    A missing, truncated or non-image file raises :class:`BenchmarkFormatError` naming ``file``,
    ``line``/``row``, ``field``, the item id and the resolved image path.
    """
    resolved = resolve_image_path(path, image_root)
    try:
        return open_image(resolved)
    except ImageLoadError as exc:
        item = f" of item {item_id!r}" if item_id is not None else ""
        raise BenchmarkFormatError(
            f"image{item} {resolved!r}: {exc.reason}", file=file, line=line, row=row, field=field
        ) from exc


def check_image_file(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    decode: bool = False,
    file: Any = None,
    line: int | None = None,
    row: int | None = None,
    field: str | None = None,
) -> None:
    """Raise :class:`BenchmarkFormatError` unless ``path`` is an existing, non-empty file (``decode``: a readable
    image)."""
    if decode:
        load_image(path, image_root=image_root, file=file, line=line, row=row, field=field)
        return
    resolved = resolve_image_path(path, image_root)
    if not os.path.isfile(resolved):
        reason = "is a directory, not an image file" if os.path.isdir(resolved) else "image file not found"
        raise BenchmarkFormatError(f"{reason}: {resolved!r}", file=file, line=line, row=row, field=field)
    if os.path.getsize(resolved) == 0:  # as cheap as the existence check, and never a decodable image
        raise BenchmarkFormatError(f"empty image file (0 bytes): {resolved!r}", file=file, line=line, row=row,
                                   field=field)


def load_task_image(task: Any, split: str, index: int) -> Image.Image | None:
    """The decoded image of row ``index`` of ``task.queries`` (``split="queries"``) or ``task.corpus``.

    ``None`` when the row has no image. Errors name the benchmark file the rows came from
    (``task.meta["queries_file"]`` / ``task.meta["corpus_file"]``), the row and the item id.
    """
    if split not in ("queries", "corpus"):
        raise ValueError(f"split must be 'queries' or 'corpus', got {split!r}")
    dataset = getattr(task, split)
    record = dataset[int(index)]
    if record["image"] is None:
        return None
    return load_image(
        record["image"],
        image_root=task.image_root,
        file=task.meta.get(f"{split}_file", task.name),
        row=int(index),
        field="image",
        item_id=record["id"],
    )
