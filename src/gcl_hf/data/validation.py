"""Checks on image–caption records: blank fields, missing or undecodable images, and the raise-or-skip rule.

Column-wise (Arrow) for in-memory datasets, row by row for streamed ones; image checks run on threads with a
progress bar.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from gcl_hf.data.errors import DataFormatError, LoadReport
from gcl_hf.data.images import ImageLoadError, open_image
from gcl_hf.errors import ErrorMode

#: How far image files are checked before any training or encoding (training data and benchmark loaders alike):
#: not at all, that each file exists and is not empty, or that it decodes.
CheckImages = Literal["none", "exists", "decode"]
CHECK_IMAGES: tuple[str, ...] = ("none", "exists", "decode")
#: Spellings accepted for convenience (Python booleans, the CLI's "no", the 0.1 name "open").
_CHECK_IMAGES_ALIASES: dict[Any, str] = {False: "none", True: "exists", "no": "none", "false": "none",
                                         "true": "exists", "open": "decode"}


def parse_check_images(value: Any) -> CheckImages:
    """The one parser of every ``check_images`` option: one of `CHECK_IMAGES`, or an alias of one."""
    if isinstance(value, str) and value.lower() in CHECK_IMAGES:
        return value.lower()  # type: ignore[return-value]
    key = value.lower() if isinstance(value, str) else value
    if isinstance(key, (bool, str)) and key in _CHECK_IMAGES_ALIASES:
        return _CHECK_IMAGES_ALIASES[key]  # type: ignore[return-value]
    raise ValueError(f"check_images={value!r}: expected one of {', '.join(CHECK_IMAGES)} (or True / False)")


@dataclass(frozen=True)
class ValidationOptions:
    """How a reader treats records (from `load_image_text_pairs`' arguments)."""

    image_root: str | None
    image_column: str
    caption_column: str
    caption_turn: int
    check: CheckImages
    errors: ErrorMode
    id_column: str | None



_CHECK_CHUNK = 2048


def is_blank(array: pa.Array) -> np.ndarray:
    """Boolean mask: null, empty or whitespace-only strings."""
    blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(array)), 0)
    return pc.fill_null(blank, True).to_numpy(zero_copy_only=False)


def has_nul(array: pa.Array) -> np.ndarray:
    """Boolean mask: strings holding a NUL character (binary data, or a UTF-16 file read as UTF-8)."""
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return np.zeros(len(array), dtype=bool)
    return pc.fill_null(pc.match_substring(array, "\x00"), False).to_numpy(zero_copy_only=False)


_NUL_REASON = "contains a NUL character (binary data, or a UTF-16 file read as UTF-8?)"


def reject(report: LoadReport, errors: ErrorMode, index: int, location: str, field_name: str | None, reason: str,
            path: str | None = None, offset: int | None = None) -> None:
    """Raise for ``errors="raise"`` (an ImageLoadError when ``path`` names an image), else count in ``report``."""
    if path is not None:
        err: DataFormatError | ImageLoadError = ImageLoadError(reason, row=location, column=field_name, path=path)
    else:
        err = DataFormatError(location, field_name, reason, offset=offset)
    if errors == "raise":
        raise err
    report.errors = "skip"
    report.handle(err, index=index)


def _ref_path(ref: Any) -> str:
    path = ref.get("path") if isinstance(ref, dict) else ref
    return os.fspath(path) if isinstance(path, (str, os.PathLike)) else f"<{type(ref).__name__}>"


def _image_problem(ref: Any, mode: str) -> str | None:
    """``None`` when the image reference is usable, else why not."""
    if mode == "decode":
        try:
            open_image(ref)
        except ImageLoadError as exc:
            return exc.reason
        return None
    if isinstance(ref, dict):
        if ref.get("bytes"):
            return None
        ref = ref.get("path")
    if ref is None:
        return "image is missing"
    if isinstance(ref, (bytes, bytearray)):
        return None if ref else "empty image bytes"
    if isinstance(ref, (str, os.PathLike)):
        if not os.path.isfile(ref):
            return "file not found"
        return None if os.path.getsize(ref) else "empty file (0 bytes)"
    return None  # arrays / PIL images are already in memory


def check_record_images(refs: Sequence[Any], mode: str, skip: np.ndarray | None = None,
                  offset: int = 0, progress: tqdm | None = None) -> Iterator[tuple[int, str]]:
    """Yield ``(index, reason)`` for each unusable image, checking chunks on a thread pool."""

    def check_chunk(start: int) -> list[tuple[int, str]]:
        found = []
        for i in range(start, min(start + _CHECK_CHUNK, len(refs))):
            if skip is not None and skip[offset + i]:
                continue
            reason = _image_problem(refs[i], mode)
            if reason is not None:
                found.append((offset + i, reason))
        return found

    own_bar = progress is None
    bar = progress or tqdm(total=len(refs), desc=f"checking images ({mode})", unit="img", disable=None)
    workers = min(16, (os.cpu_count() or 1) * (4 if mode == "exists" else 1))
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start, found in zip(range(0, len(refs), _CHECK_CHUNK),
                                    pool.map(check_chunk, range(0, len(refs), _CHECK_CHUNK))):
                bar.update(min(_CHECK_CHUNK, len(refs) - start))
                yield from found
    finally:
        if own_bar:
            bar.close()


def _image_missing(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    if pa.types.is_struct(column.type):  # datasets.Image storage: {bytes, path}
        column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        has_bytes = pc.fill_null(pc.greater(pc.binary_length(column.field("bytes")), 0), False)
        has_path = ~is_blank(column.field("path"))
        null = pc.is_null(column).to_numpy(zero_copy_only=False)
        return null | ~(has_bytes.to_numpy(zero_copy_only=False) | has_path)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return is_blank(column)
    return pc.is_null(column).to_numpy(zero_copy_only=False)


def _row_problem(row: dict[str, Any], column: str, caption_column: str) -> tuple[str, str] | None:
    text = row["text"]
    if text is None or not str(text).strip():
        return caption_column, "empty caption"
    if "\x00" in str(text):
        return caption_column, f"caption {_NUL_REASON}"
    image = row["image"]
    if image is None or (isinstance(image, str) and not image.strip()) or (
            isinstance(image, dict) and not image.get("bytes") and not image.get("path")):
        return column, "missing image"
    if isinstance(image, str) and "\x00" in image:
        return column, f"image path {_NUL_REASON}"
    return None


def validate_dataset(dataset: datasets.Dataset, opts: ValidationOptions, label: str, report: LoadReport) -> datasets.Dataset:
    bad = np.zeros(len(dataset), dtype=bool)
    reasons: dict[int, tuple[str, str]] = {}
    batch_size = 50_000
    arrow = dataset.with_format("arrow")
    for start in range(0, len(dataset), batch_size):
        table = arrow[start:start + batch_size]
        text = table.column("text").combine_chunks()
        blank_text, nul_text = is_blank(text), has_nul(text)
        no_image = _image_missing(table.column("image"))
        image = table.column("image").combine_chunks()
        nul_image = has_nul(image)
        for i in np.flatnonzero(blank_text | nul_text | no_image | nul_image):
            if blank_text[i]:
                reasons[start + int(i)] = (opts.caption_column, "empty caption")
            elif nul_text[i]:
                reasons[start + int(i)] = (opts.caption_column, f"caption {_NUL_REASON}")
            elif no_image[i]:
                reasons[start + int(i)] = (opts.image_column, "missing image")
            else:
                reasons[start + int(i)] = (opts.image_column, f"image path {_NUL_REASON}")
        bad[start:start + len(table)] = blank_text | nul_text | no_image | nul_image
    for i, (field_name, reason) in reasons.items():
        reject(report, opts.errors, i, f"{label} row {i}", field_name, reason)
    if opts.check != "none":
        bar = tqdm(total=len(dataset), desc=f"checking images ({opts.check})", unit="img", disable=None)
        try:
            for start in range(0, len(dataset), batch_size):
                refs = arrow[start:start + batch_size].column("image").to_pylist()
                for i, reason in check_record_images(refs, opts.check, skip=bad, offset=start, progress=bar):
                    bad[i] = True
                    reject(report, opts.errors, i, f"{label} row {i}", opts.image_column, reason,
                            path=_ref_path(refs[i - start]))
        finally:
            bar.close()
    if bad.any():
        dataset = dataset.select(np.flatnonzero(~bad))
    return dataset


def validate_stream(dataset: datasets.IterableDataset, opts: ValidationOptions, label: str,
                     report: LoadReport) -> datasets.IterableDataset:
    """Lazy checks for streamed datasets: raise, or filter and count, while iterating."""

    def ok(row: dict[str, Any], index: int) -> bool:
        report.num_records += 1
        problem = _row_problem(row, opts.image_column, opts.caption_column)
        if problem is not None:
            reject(report, opts.errors, index, f"{label} row {index}", *problem)
            return False
        reason = _image_problem(row["image"], opts.check) if opts.check != "none" else None
        if reason is not None:
            reject(report, opts.errors, index, f"{label} row {index}", opts.image_column, reason,
                    path=_ref_path(row["image"]))
            return False
        return True

    return dataset.filter(ok, with_indices=True)
