"""Readers for each training-data source: imagefolder + metadata, JSON/JSONL lists (LLaVA's LCS-558K), CSV,
parquet, Hub datasets and in-memory ``Dataset`` s. Each returns ``(dataset, LoadReport)`` with columns
``image`` (lazy) and ``text``.

Scale: a JSON list is parsed once (``json.load``), fields are pulled out with two list comprehensions and
everything else (``<image>`` removal, emptiness checks, path joins, filtering) is column-wise Arrow compute, so
LCS-558K's 558k records load in seconds.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Callable
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gcl_hf.data.errors import DataFormatError, DataSourceError, LoadReport
from gcl_hf.data.textfiles import MakeError, csv_rows, read_text, split_lines
from gcl_hf.data.validation import (is_blank, check_record_images, has_nul, ValidationOptions, reject, validate_dataset,
                                    validate_stream)

METADATA_FILES = ("metadata.jsonl", "metadata.csv")

IMAGE_TOKEN = "<image>"

_SPLIT_NAMES = {"train", "test", "validation", "valid", "val", "dev", "eval"}


def from_file(path: str, fmt: str, split: str, opts: ValidationOptions) -> tuple[datasets.Dataset, LoadReport]:
    if fmt == "csv" or path.lower().endswith((".csv", ".tsv")):
        records, locate, header = _read_csv(path)
        _require_columns(path, header, [opts.image_column, opts.caption_column])
    else:
        records, locate = _read_json(path)
    llava = fmt == "llava" or (fmt == "json" and _mostly_llava(records, opts.caption_column))
    root = opts.image_root or os.path.dirname(path)
    return _from_records(records, locate, opts, image_key=opts.image_column, llava=llava, root=root,
                         label=path, fmt="llava" if llava else fmt, split=split)


def _mostly_llava(records: list[Any], caption_key: str) -> bool:
    """LLaVA when more records have ``conversations`` (and no caption field) than have the caption field: decided
    by the records as a whole, so that one bad record (say the first) is reported as itself, not as the format."""
    llava = plain = 0
    for record in records:
        if isinstance(record, dict):
            if caption_key in record:
                plain += 1
            elif "conversations" in record:
                llava += 1
    return llava > plain


def _require_columns(path: str, header: list[str] | None, columns: list[str]) -> None:
    """A column missing from a CSV header is the file's fault, not each row's: one error, whatever ``errors``."""
    if header is None:
        return
    for column in columns:
        if column not in header:
            raise DataFormatError(f"{path}: line 1", column, f"column not found (header: {header})")


def from_imagefolder(path: str, split: str, opts: ValidationOptions) -> tuple[datasets.Dataset, LoadReport]:
    base = os.path.join(path, split) if split and os.path.isdir(os.path.join(path, split)) else path
    if base == path:
        split_dirs = sorted(d for d in os.listdir(path) if d in _SPLIT_NAMES and os.path.isdir(os.path.join(path, d)))
        if split_dirs:
            raise DataSourceError(f"{path}: no {split!r} split folder (found {split_dirs}); pass split=...")
    files: list[str] = []
    for folder, dirs, names in os.walk(base):
        dirs.sort()
        found = [n for n in METADATA_FILES if n in names]
        if len(found) > 1:
            raise DataSourceError(f"{folder}: both metadata.jsonl and metadata.csv; keep one")
        files += [os.path.join(folder, n) for n in found]
    if not files:
        raise DataSourceError(
            f"{base}: no metadata.jsonl or metadata.csv; an image–text imagefolder needs one with a 'file_name' "
            f"column and a caption column ({opts.caption_column!r})")
    records: list[Any] = []
    parts: list[tuple[int, Callable[[int], str]]] = []
    roots: list[str] = []
    headers: list[tuple[str, list[str]]] = []
    for file in files:
        if file.endswith(".csv"):
            recs, locate, header = _read_csv(file)
            if header is not None:
                headers.append((file, header))
        else:
            recs, locate = _read_json(file)
        parts.append((len(records), locate))
        roots.append(os.path.dirname(file))
        records += recs
    starts = [start for start, _ in parts]

    def locate_any(i: int) -> str:
        k = bisect.bisect_right(starts, i) - 1
        return parts[k][1](i - starts[k])

    with_file_name = sum(1 for r in records if isinstance(r, dict) and "file_name" in r)
    with_image = sum(1 for r in records if isinstance(r, dict) and opts.image_column in r)
    with_file_name += sum(1 for _, header in headers if "file_name" in header)
    with_image += sum(1 for _, header in headers if opts.image_column in header)
    image_key = opts.image_column if with_image > with_file_name else "file_name"
    for file, header in headers:
        _require_columns(file, header, [image_key, opts.caption_column])
    root: str | list[str]
    if opts.image_root is not None or len(files) == 1:
        root = opts.image_root or roots[0]
    else:  # several metadata files: each file's names are relative to its own folder
        counts = np.diff(starts + [len(records)])
        root = [folder for folder, count in zip(roots, counts) for _ in range(count)]
    return _from_records(records, locate_any, opts, image_key=image_key, llava=False, root=root, label=base,
                         fmt="imagefolder", split=split)


class _Broken:
    """A line or row that could not be parsed, kept in its place so that record numbers and order stay true."""

    __slots__ = ("offset", "reason")

    def __init__(self, reason: str, offset: int | None = None) -> None:
        self.reason, self.offset = reason, offset


def _line_error(path: str) -> MakeError:
    return lambda reason, line, offset=None: DataFormatError(f"{path}: line {line}", None, reason, offset=offset)


def _read_json(path: str) -> tuple[list[Any], Callable[[int], str]]:
    """Parse a JSON list or a JSONL file once; ``locate(i)`` names record i for error messages. A JSONL line that
    is not UTF-8 or not JSON becomes a :class:`_Broken` record (reported, or skipped with ``errors="skip"``)."""
    decoded = read_text(path, _line_error(path))
    text = decoded.text
    stripped = text.lstrip()
    jsonl = path.lower().endswith(".jsonl")
    if not jsonl and stripped.startswith("{") and not decoded.bad_lines:
        try:  # a .json file holding one object is a mistake; JSON lines in a .json file are fine
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None
        if isinstance(whole, dict):
            raise DataFormatError(path, None, "expected a JSON list of records (or JSON lines), got one object")
    if jsonl or not stripped.startswith("["):
        lines = split_lines(text)
        numbers = [n for n, line in enumerate(lines, 1) if line.strip()]
        if not jsonl and not stripped.startswith(("{", "[")) and numbers and numbers[0] not in decoded.bad_lines:
            raise DataFormatError(f"{path}: line {numbers[0]}", None, "not JSON (expected a list or JSON lines)")
        records = None
        if not decoded.bad_lines:
            try:  # one parser call for the whole file; per line only when some line is broken
                records = json.loads("[" + ",".join(lines[n - 1] for n in numbers) + "]")
            except json.JSONDecodeError:
                pass
        if records is None or len(records) != len(numbers):  # (a line holding two values shifts the rest)
            truncated = bool(text) and not text.endswith("\n")
            records = [_json_line(lines[n - 1], decoded.bad_lines.get(n), last=truncated and n == len(lines))
                       for n in numbers]
        return records, lambda i: f"{path}: line {numbers[i]}"
    if decoded.bad_lines:
        line, err = min(decoded.bad_lines.items())
        raise DataFormatError(f"{path}: line {line}", None, f"{err.reason}; a JSON list cannot skip one record, "
                              "the whole file must be UTF-8", offset=err.offset)
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}: line {exc.lineno}", None,
                              f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(records, list):
        raise DataFormatError(path, None, f"expected a JSON list of records, got {type(records).__name__}")
    return records, lambda i: f"{path}: record {i}"


def _json_line(line: str, bad: DataFormatError | None, *, last: bool) -> Any:
    if bad is not None:
        return _Broken(bad.reason, bad.offset)
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        hint = "; the line has no newline at the end: the file looks truncated" if last else ""
        return _Broken(f"invalid JSON: {exc.msg} (column {exc.colno}){hint}")


def _read_csv(path: str) -> tuple[list[Any], Callable[[int], str], list[str] | None]:
    """The rows of a CSV (TSV) file as dicts keyed by its header (``None`` for an empty file); a row that is not
    UTF-8 becomes a :class:`_Broken` record. ``locate(i)`` names the first line of row i."""
    make_error = _line_error(path)
    decoded = read_text(path, make_error)
    rows = csv_rows(decoded.text, "\t" if path.lower().endswith(".tsv") else ",", make_error)
    first_row = next(rows, None)
    if first_row is None:
        return [], lambda i: path, None
    first, last, header = first_row
    for number in range(first, last + 1):
        if number in decoded.bad_lines:
            raise decoded.bad_lines[number]  # no header, no rows
    records: list[Any] = []
    lines: list[int] = []
    for first, last, values in rows:
        bad = next((n for n in range(first, last + 1) if n in decoded.bad_lines), None)
        if bad is None and len(values) > len(header):
            records.append(_Broken(f"{len(values)} fields for the {len(header)} columns of the header (a field with an "
                                   "unquoted comma or tab? put it in double quotes)"))
        elif bad is None:
            records.append(dict(zip(header, values)))
        else:
            where = "" if bad == first else f"line {bad}: "
            records.append(_Broken(where + decoded.bad_lines[bad].reason, decoded.bad_lines[bad].offset))
        lines.append(first)
    return records, lambda i: f"{path}: line {lines[i]}", header


_NUL_HINT = " (binary data, or a UTF-16 file read as UTF-8?)"


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _diagnose(record: Any, *, image_key: str, caption_key: str, llava: bool, turn: int) -> tuple[str | None, str]:
    """Why record failed: ``(field, reason)``. Only called for records the fast path flagged."""
    if isinstance(record, _Broken):
        return None, record.reason
    if not isinstance(record, dict):
        return None, f"expected a JSON object, got {_type_name(record)}"
    if image_key not in record:
        return image_key, "missing image path"
    image = record[image_key]
    if not isinstance(image, str):
        return image_key, f"image path must be a string, got {_type_name(image)}"
    if not image.strip():
        return image_key, "empty image path"
    if "\x00" in image:
        return image_key, f"image path contains a NUL character{_NUL_HINT}"
    if llava:
        if "conversations" not in record:
            return "conversations", "missing (LLaVA records need 'conversations')"
        turns = record["conversations"]
        if not isinstance(turns, list):
            return "conversations", f"expected a list of turns, got {_type_name(turns)}"
        name = f"conversations[{turn}]"
        try:
            entry = turns[turn]
        except IndexError:
            return name, f"caption turn {turn} missing (the record has {len(turns)} turns)"
        if not isinstance(entry, dict) or "value" not in entry:
            return f"{name}.value", "missing"
        caption, caption_key = entry["value"], f"{name}.value"
    else:
        if caption_key not in record:
            return caption_key, "missing caption"
        caption = record[caption_key]
    if not isinstance(caption, str):
        return caption_key, f"caption must be a string, got {_type_name(caption)}"
    if not caption.replace(IMAGE_TOKEN, "").strip() if llava else not caption.strip():
        return caption_key, "empty caption"
    if "\x00" in caption:
        return caption_key, f"caption contains a NUL character{_NUL_HINT}"
    return None, "unknown problem"  # pragma: no cover - the fast path and this check agree


def _llava_caption(record: Any, turn: int) -> Any:
    try:
        return record["conversations"][turn]["value"]
    except (KeyError, IndexError, TypeError):
        return None


def _get(record: Any, key: str) -> Any:
    return record.get(key) if isinstance(record, dict) else None


def _string_array(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values, type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # non-strings become nulls; _diagnose explains them
        return pa.array([v if isinstance(v, str) else None for v in values], type=pa.string())


def _join_root(paths: pa.Array, root: str | list[str]) -> pa.Array:
    """Relative paths joined to ``root`` (a folder, or one folder per row), column-wise."""
    roots = pa.array(root, pa.string()) if isinstance(root, list) else os.path.abspath(root)
    absolute = pc.starts_with(paths, os.sep)
    return pc.if_else(absolute, paths, pc.binary_join_element_wise(roots, paths, os.sep))


def _from_records(records: list[Any], locate: Callable[[int], str], opts: ValidationOptions, *, image_key: str, llava: bool,
                  root: str | list[str], label: str, fmt: str, split: str) -> tuple[datasets.Dataset, LoadReport]:
    turn, caption_key = opts.caption_turn, opts.caption_column
    report = LoadReport(source=label, format=fmt, num_records=len(records))
    try:  # fast path: plain comprehensions over well-formed records
        images = [r[image_key] for r in records]
        captions = [r["conversations"][turn]["value"] for r in records] if llava else [r[caption_key] for r in records]
    except (KeyError, IndexError, TypeError):
        images = [_get(r, image_key) for r in records]
        captions = [_llava_caption(r, turn) for r in records] if llava else [_get(r, caption_key) for r in records]
    image_array, text_array = _string_array(images), _string_array(captions)
    del images, captions
    if llava:
        text_array = pc.utf8_trim_whitespace(pc.replace_substring(text_array, IMAGE_TOKEN, ""))
    bad = is_blank(image_array) | is_blank(text_array) | has_nul(image_array) | has_nul(text_array)

    def where(i: int) -> str:
        record_id = _get(records[i], "id")
        return f"{locate(i)} (id {record_id!r})" if record_id is not None else locate(i)

    for i in np.flatnonzero(bad):
        field_name, reason = _diagnose(records[i], image_key=image_key, caption_key=caption_key, llava=llava, turn=turn)
        reject(report, opts.errors, int(i), where(int(i)), field_name, reason,
                offset=getattr(records[i], "offset", None))

    image_array = _join_root(image_array, root)
    columns = {"image": image_array, "text": text_array}
    if opts.id_column is not None:
        ids = [_get(r, opts.id_column) for r in records]
        columns["id"] = pa.array([None if v is None else str(v) for v in ids], pa.string())
    if opts.check != "none":
        refs = image_array.to_pylist()
        for i, reason in check_record_images(refs, opts.check, skip=bad):
            bad[i] = True
            reject(report, opts.errors, i, where(i), image_key, reason, path=refs[i])
    if bad.any():
        keep = pa.array(~bad)
        columns = {k: pc.filter(v, keep) for k, v in columns.items()}
    features = datasets.Features({k: datasets.Value("string") for k in columns})
    dataset = datasets.Dataset.from_dict(columns, features=features, split=split)
    return dataset, report


def from_hub(name: str, split: str, revision: str | None, streaming: bool,
              opts: ValidationOptions) -> tuple[datasets.Dataset | datasets.IterableDataset, LoadReport]:
    label = f"Hub dataset {name!r} (split {split!r}" + (f", revision {revision!r})" if revision else ")")
    try:
        loaded = datasets.load_dataset(name, split=split, revision=revision, streaming=streaming)
    except Exception as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or \
            os.environ.get("HF_DATASETS_OFFLINE", "0").lower() in ("1", "true", "yes")
        hint = (" Offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE): download the dataset into the cache "
                "first, or pass a local folder or JSON file." if offline else
                " Check the name, split and revision, your network and your Hub token.")
        raise DataSourceError(f"cannot load {label}: {type(exc).__name__}: {exc}.{hint}") from exc
    if not isinstance(loaded, (datasets.Dataset, datasets.IterableDataset)):
        raise DataSourceError(f"{label} gave a {type(loaded).__name__}; pass a single split name")
    return from_dataset(loaded, opts, label=label, fmt="hub")


def from_dataset(dataset: datasets.Dataset | datasets.IterableDataset, opts: ValidationOptions, *, label: str, fmt: str,
                  default_root: str | None = None) -> tuple[datasets.Dataset | datasets.IterableDataset, LoadReport]:
    """Select and rename the two columns, keep images lazy, validate column-wise."""
    wanted = {opts.image_column: "image", opts.caption_column: "text"}
    if opts.id_column is not None:
        wanted[opts.id_column] = "id"
    columns = dataset.column_names
    if columns is not None:
        for column in wanted:
            if column not in columns:
                raise DataFormatError(label, column, f"column not found (columns: {columns})")
    dataset = dataset.select_columns(list(wanted))
    renames = {k: v for k, v in wanted.items() if k != v}
    if renames:
        dataset = dataset.rename_columns(renames)
    features = dataset.features
    if features is not None:
        text_feature = features["text"]
        if not (isinstance(text_feature, datasets.Value) and text_feature.dtype in ("string", "large_string")):
            raise DataFormatError(label, opts.caption_column, f"captions must be strings, the column is {text_feature}")
        image_feature = features["image"]
        if isinstance(image_feature, datasets.Value) and image_feature.dtype not in _IMAGE_DTYPES:
            raise DataFormatError(label, opts.image_column,
                                  f"images must be paths, bytes or datasets.Image, the column is {image_feature}")
        if isinstance(image_feature, datasets.Image) and image_feature.decode:
            dataset = dataset.cast_column("image", datasets.Image(decode=False))
        if "id" in features and features["id"] != datasets.Value("string"):
            dataset = dataset.cast_column("id", datasets.Value("string"))
        root = opts.image_root or default_root
        if root is not None and isinstance(image_feature, datasets.Value) and image_feature.dtype == "string":
            dataset = _map_image_paths(dataset, root)
    report = LoadReport(source=label, format=fmt)
    if isinstance(dataset, datasets.IterableDataset):
        return validate_stream(dataset, opts, label, report), report
    report.num_records = len(dataset)
    return validate_dataset(dataset, opts, label, report), report


_IMAGE_DTYPES = ("string", "large_string", "binary", "large_binary")


def _map_image_paths(dataset: datasets.Dataset | datasets.IterableDataset, root: str):
    def join(batch: dict[str, list]) -> dict[str, list]:
        return {"image": _join_root(pa.array(batch["image"], pa.string()), root).to_pylist()}

    return dataset.map(join, batched=True, batch_size=10_000)
