"""Image–caption training pairs from local folders, JSON lists, the Hub or a ``Dataset``.

:func:`load_image_text_pairs` returns a ``datasets.Dataset`` with two columns, ``image`` and
``text``. Images stay lazy: local sources give file paths (``string``), Hub / in-memory
datasets keep their ``datasets.Image`` feature with ``decode=False``. Decoding happens in
:class:`gcl_hf.data.collator.GCLCollator`, i.e. in the dataloader workers.

Malformed records raise :class:`DataFormatError`, which names the file, the record
(``record N`` = 0-based index in a JSON list, ``line N`` = 1-based line of a JSONL/CSV file,
``row N`` = 0-based row of a dataset) and the field. With ``errors="skip"`` they are dropped,
counted and logged instead; ``return_report=True`` also returns a :class:`LoadReport` that
lists them (we return it rather than stash it on the dataset or in a global so that it is
typed, thread-safe and cannot go stale).

Scale: a JSON list is parsed once (``json.load``), fields are pulled out with two list
comprehensions and everything else (``<image>`` removal, emptiness checks, path joins,
filtering) is column-wise Arrow compute, so LLaVA's 558k-record LCS file loads in seconds.
"""

from __future__ import annotations

import bisect
import csv
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from gcl_hf.data.images import ImageLoadError, open_image

__all__ = [
    "DataFormatError",
    "DataSourceError",
    "LoadReport",
    "SkippedRecord",
    "load_image_text_pairs",
]

logger = logging.getLogger(__name__)

ErrorMode = Literal["raise", "skip"]
CheckImages = bool | Literal["exists", "open"]
#: Source formats :func:`load_image_text_pairs` understands (``format=None`` detects them).
FORMATS = ("imagefolder", "llava", "json", "csv", "parquet", "hub", "dataset")
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
IMAGE_TOKEN = "<image>"
#: How many skipped records a :class:`LoadReport` keeps in full (the count is always exact).
MAX_REPORTED_SKIPS = 1000
_CHECK_CHUNK = 2048
_SPLIT_NAMES = {"train", "test", "validation", "valid", "val", "dev", "eval"}


class DataFormatError(ValueError):
    """A malformed record: ``location`` (file and record/line/row), ``field`` and ``reason``."""

    def __init__(self, location: str, field: str | None, reason: str):
        self.location, self.field, self.reason = location, field, reason
        where = f"{location}: field {field!r}" if field else location
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):
        return (type(self), (self.location, self.field, self.reason))


class DataSourceError(OSError):
    """The source itself cannot be opened (missing file or folder, Hub dataset unreachable)."""


@dataclass(frozen=True)
class SkippedRecord:
    """One record dropped by ``errors="skip"``."""

    index: int  # 0-based position in the source (JSON list index / data line / dataset row)
    location: str  # human-readable: file and record/line/row
    field: str | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.location}: field {self.field!r}" if self.field else self.location
        return f"{where}: {self.reason}"


@dataclass
class LoadReport:
    """What :func:`load_image_text_pairs` read, kept and skipped.

    For a streamed Hub dataset the counts grow while the stream is iterated (in the process
    that iterates it).
    """

    source: str
    format: str
    num_records: int = 0
    num_skipped: int = 0
    skipped: list[SkippedRecord] = field(default_factory=list)  # the first MAX_REPORTED_SKIPS

    @property
    def num_kept(self) -> int:
        return self.num_records - self.num_skipped

    def _add(self, record: SkippedRecord) -> None:
        self.num_skipped += 1
        if len(self.skipped) < MAX_REPORTED_SKIPS:
            self.skipped.append(record)

    def _log(self) -> None:
        if self.num_skipped:
            shown = "; ".join(str(r) for r in self.skipped[:5])
            more = f" (and {self.num_skipped - 5} more)" if self.num_skipped > 5 else ""
            logger.warning("skipped %d of %d records from %s: %s%s", self.num_skipped, self.num_records,
                           self.source, shown, more)


# ----------------------------------------------------------------------------- public entry point


@overload
def load_image_text_pairs(source: Any, *, return_report: Literal[False] = ..., **kwargs: Any) -> datasets.Dataset: ...
@overload
def load_image_text_pairs(source: Any, *, return_report: Literal[True],
                          **kwargs: Any) -> tuple[datasets.Dataset, LoadReport]: ...


def load_image_text_pairs(
    source: str | os.PathLike | datasets.Dataset | datasets.IterableDataset,
    *,
    image_root: str | os.PathLike | None = None,
    image_column: str = "image",
    caption_column: str = "text",
    split: str = "train",
    revision: str | None = None,
    format: str | None = None,
    caption_turn: int = 1,
    check_images: CheckImages = False,
    errors: ErrorMode = "raise",
    streaming: bool = False,
    id_column: str | None = None,
    return_report: bool = False,
) -> datasets.Dataset | datasets.IterableDataset | tuple[datasets.Dataset | datasets.IterableDataset, LoadReport]:
    """Load image–caption pairs as a ``Dataset`` with columns ``image`` (lazy) and ``text``.

    ``source`` is one of:

    * a local **imagefolder**: a directory with ``metadata.jsonl`` / ``metadata.csv`` files
      (``datasets``' convention: a ``file_name`` column, relative to the metadata file, plus
      ``caption_column``); a ``<source>/<split>/`` sub-folder is used when it exists;
    * a **JSON / JSONL** list file. Records with ``conversations`` (LLaVA, e.g. LCS-558K's
      ``blip_laion_cc_sbu_558k.json``) take the caption from
      ``conversations[caption_turn]["value"]`` (``<image>`` placeholders removed, whitespace
      stripped); other records take ``caption_column``. Both read the image path from
      ``image_column``. A ``.csv`` / ``.parquet`` file works like a plain JSON list;
    * a **Hub** dataset name, loaded with ``load_dataset(name, split=split, revision=revision)``;
    * a ``datasets.Dataset`` (or ``IterableDataset``), passed through.

    Relative image paths resolve against ``image_root`` (default: the folder of the JSON /
    metadata file); Hub and ``Dataset`` string paths are joined to ``image_root`` only when it
    is given. ``format`` forces one of :data:`FORMATS` instead of detecting it.

    ``check_images``: ``True`` / ``"exists"`` verifies every image file exists upfront,
    ``"open"`` also decodes it (slow; threads + progress bar). ``errors="raise"`` raises
    :class:`DataFormatError` (or :class:`~gcl_hf.data.images.ImageLoadError`) on the first bad
    record; ``"skip"`` drops bad records, logs a warning and counts them in the report.
    ``id_column`` keeps that source field as an extra string column ``id`` (e.g. ``"id"`` for
    LCS-558K) so the collator can name failing records. ``streaming=True`` returns an
    ``IterableDataset`` (Hub datasets are then validated lazily while iterating).
    ``return_report=True`` returns ``(dataset, LoadReport)``.
    """
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    if check_images not in (False, True, "exists", "open"):
        raise ValueError(f"check_images must be False, True, 'exists' or 'open', got {check_images!r}")
    if format is not None and format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS} or None, got {format!r}")
    if image_column == caption_column:
        raise ValueError(f"image_column and caption_column are both {image_column!r}")
    check: str | None = {False: None, True: "exists"}.get(check_images, check_images)  # type: ignore[arg-type]
    opts = _Options(image_root=os.fspath(image_root) if image_root is not None else None, image_column=image_column,
                    caption_column=caption_column, caption_turn=caption_turn, check=check, errors=errors,
                    id_column=id_column)

    fmt = format or _detect_format(source)
    if fmt == "dataset":
        if not isinstance(source, (datasets.Dataset, datasets.IterableDataset)):
            raise TypeError(f"format='dataset' needs a datasets.Dataset, got {type(source).__name__}")
        dataset, report = _from_dataset(source, opts, label="dataset", fmt="dataset")
    elif fmt == "hub":
        dataset, report = _from_hub(str(source), split, revision, streaming, opts)
    else:
        path = os.path.abspath(os.path.expanduser(os.fspath(source)))
        if not os.path.exists(path):
            raise DataSourceError(f"{path}: no such file or directory ({fmt} source)")
        if fmt == "imagefolder":
            dataset, report = _from_imagefolder(path, split, opts)
        elif fmt == "parquet":
            table = datasets.Dataset.from_parquet(path, split=split)
            root = opts.image_root or os.path.dirname(path)
            dataset, report = _from_dataset(table, opts, label=path, fmt="parquet", default_root=root)
        else:
            dataset, report = _from_file(path, fmt, split, opts)
    report._log()
    if streaming and isinstance(dataset, datasets.Dataset):
        dataset = dataset.to_iterable_dataset()
    return (dataset, report) if return_report else dataset


# ----------------------------------------------------------------------------- options and detection


@dataclass(frozen=True)
class _Options:
    image_root: str | None
    image_column: str
    caption_column: str
    caption_turn: int
    check: str | None
    errors: str
    id_column: str | None


def _detect_format(source: Any) -> str:
    if isinstance(source, (datasets.Dataset, datasets.IterableDataset)):
        return "dataset"
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path, a Hub dataset name or a datasets.Dataset, got {type(source).__name__}")
    text = os.path.expanduser(os.fspath(source))
    if os.path.isdir(text):
        return "imagefolder"
    ext = os.path.splitext(text)[1].lower()
    if ext in (".json", ".jsonl"):
        return "json"
    if ext in (".csv", ".tsv"):
        return "csv"
    if ext == ".parquet":
        return "parquet"
    if os.path.exists(text):
        raise ValueError(f"{text}: cannot tell the format from the extension {ext!r}; pass format=...")
    if os.path.isabs(text) or text.startswith((".", "~")) or ext in (".json", ".jsonl", ".csv", ".tsv", ".parquet"):
        raise DataSourceError(f"{text}: no such file or directory")
    return "hub"


# ----------------------------------------------------------------------------- local files


def _from_file(path: str, fmt: str, split: str, opts: _Options) -> tuple[datasets.Dataset, LoadReport]:
    if fmt == "csv" or path.lower().endswith((".csv", ".tsv")):
        records, locate = _read_csv(path)
    else:
        records, locate = _read_json(path)
    llava = fmt == "llava" or (
        fmt == "json" and bool(records) and isinstance(records[0], dict)
        and "conversations" in records[0] and opts.caption_column not in records[0]
    )
    root = opts.image_root or os.path.dirname(path)
    return _from_records(records, locate, opts, image_key=opts.image_column, llava=llava, root=root,
                         label=path, fmt="llava" if llava else fmt, split=split)


def _from_imagefolder(path: str, split: str, opts: _Options) -> tuple[datasets.Dataset, LoadReport]:
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
    for file in files:
        recs, locate = _read_csv(file) if file.endswith(".csv") else _read_json(file)
        parts.append((len(records), locate))
        roots.append(os.path.dirname(file))
        records += recs
    starts = [start for start, _ in parts]

    def locate_any(i: int) -> str:
        k = bisect.bisect_right(starts, i) - 1
        return parts[k][1](i - starts[k])

    image_key = "file_name"
    if records and isinstance(records[0], dict) and "file_name" not in records[0] and opts.image_column in records[0]:
        image_key = opts.image_column
    root: str | list[str]
    if opts.image_root is not None or len(files) == 1:
        root = opts.image_root or roots[0]
    else:  # several metadata files: each file's names are relative to its own folder
        counts = np.diff(starts + [len(records)])
        root = [folder for folder, count in zip(roots, counts) for _ in range(count)]
    return _from_records(records, locate_any, opts, image_key=image_key, llava=False, root=root, label=base,
                         fmt="imagefolder", split=split)


def _read_json(path: str) -> tuple[list[Any], Callable[[int], str]]:
    """Parse a JSON list or a JSONL file once; ``locate(i)`` names record i for error messages."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    stripped = text.lstrip()
    if not path.lower().endswith(".jsonl") and stripped.startswith("{"):
        try:  # a .json file holding one object is a mistake; JSON lines in a .json file are fine
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None
        if isinstance(whole, dict):
            raise DataFormatError(path, None, "expected a JSON list of records (or JSON lines), got one object")
    if path.lower().endswith(".jsonl") or not stripped.startswith("["):
        lines = text.splitlines()
        numbers = [n for n, line in enumerate(lines, 1) if line.strip()]
        if not stripped.startswith(("{", "[")) and numbers:
            raise DataFormatError(f"{path}: line {numbers[0]}", None, "not JSON (expected a list or JSON lines)")
        try:  # one parser call for the whole file; per-line only to locate a syntax error
            records = json.loads("[" + ",".join(lines[n - 1] for n in numbers) + "]")
        except json.JSONDecodeError:
            for n in numbers:
                try:
                    json.loads(lines[n - 1])
                except json.JSONDecodeError as exc:
                    raise DataFormatError(f"{path}: line {n}", None,
                                          f"invalid JSON: {exc.msg} (column {exc.colno})") from None
            raise
        return records, lambda i: f"{path}: line {numbers[i]}"
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}: line {exc.lineno}", None,
                              f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(records, list):
        raise DataFormatError(path, None, f"expected a JSON list of records, got {type(records).__name__}")
    return records, lambda i: f"{path}: record {i}"


def _read_csv(path: str) -> tuple[list[dict[str, str]], Callable[[int], str]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t" if path.lower().endswith(".tsv") else ",")
        records, lines = [], []
        for row in reader:
            records.append(row)
            lines.append(reader.line_num)
    return records, lambda i: f"{path}: line {lines[i]}"


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _diagnose(record: Any, *, image_key: str, caption_key: str, llava: bool, turn: int) -> tuple[str | None, str]:
    """Why record failed: ``(field, reason)``. Only called for records the fast path flagged."""
    if not isinstance(record, dict):
        return None, f"expected a JSON object, got {_type_name(record)}"
    if image_key not in record:
        return image_key, "missing image path"
    image = record[image_key]
    if not isinstance(image, str):
        return image_key, f"image path must be a string, got {_type_name(image)}"
    if not image.strip():
        return image_key, "empty image path"
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


def _blank(array: pa.Array) -> np.ndarray:
    """Boolean mask: null, empty or whitespace-only strings."""
    blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(array)), 0)
    return pc.fill_null(blank, True).to_numpy(zero_copy_only=False)


def _join_root(paths: pa.Array, root: str | list[str]) -> pa.Array:
    """Relative paths joined to ``root`` (a folder, or one folder per row), column-wise."""
    roots = pa.array(root, pa.string()) if isinstance(root, list) else os.path.abspath(root)
    absolute = pc.starts_with(paths, os.sep)
    return pc.if_else(absolute, paths, pc.binary_join_element_wise(roots, paths, os.sep))


def _from_records(records: list[Any], locate: Callable[[int], str], opts: _Options, *, image_key: str, llava: bool,
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
    bad = _blank(image_array) | _blank(text_array)

    def where(i: int) -> str:
        record_id = _get(records[i], "id")
        return f"{locate(i)} (id {record_id!r})" if record_id is not None else locate(i)

    for i in np.flatnonzero(bad):
        field_name, reason = _diagnose(records[i], image_key=image_key, caption_key=caption_key, llava=llava, turn=turn)
        _reject(report, opts.errors, int(i), where(int(i)), field_name, reason)

    image_array = _join_root(image_array, root)
    columns = {"image": image_array, "text": text_array}
    if opts.id_column is not None:
        ids = [_get(r, opts.id_column) for r in records]
        columns["id"] = pa.array([None if v is None else str(v) for v in ids], pa.string())
    if opts.check:
        refs = image_array.to_pylist()
        for i, reason in _check_images(refs, opts.check, skip=bad):
            bad[i] = True
            _reject(report, opts.errors, i, where(i), image_key, reason, path=refs[i])
    if bad.any():
        keep = pa.array(~bad)
        columns = {k: pc.filter(v, keep) for k, v in columns.items()}
    features = datasets.Features({k: datasets.Value("string") for k in columns})
    dataset = datasets.Dataset.from_dict(columns, features=features, split=split)
    return dataset, report


def _reject(report: LoadReport, errors: str, index: int, location: str, field_name: str | None, reason: str,
            path: str | None = None) -> None:
    """Raise for ``errors="raise"`` (an ImageLoadError when ``path`` names an image), else count."""
    if errors == "raise":
        if path is not None:
            raise ImageLoadError(reason, row=location, column=field_name, path=path)
        raise DataFormatError(location, field_name, reason)
    if path is not None:
        reason = f"{reason} ({path})"
    report._add(SkippedRecord(index=index, location=location, field=field_name, reason=reason))


# ----------------------------------------------------------------------------- image checks


def _ref_path(ref: Any) -> str:
    path = ref.get("path") if isinstance(ref, dict) else ref
    return os.fspath(path) if isinstance(path, (str, os.PathLike)) else f"<{type(ref).__name__}>"


def _image_problem(ref: Any, mode: str) -> str | None:
    """``None`` when the image reference is usable, else why not."""
    if mode == "open":
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
        return None if os.path.isfile(ref) else "file not found"
    return None  # arrays / PIL images are already in memory


def _check_images(refs: Sequence[Any], mode: str, skip: np.ndarray | None = None,
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


# ----------------------------------------------------------------------------- datasets and the Hub


def _from_hub(name: str, split: str, revision: str | None, streaming: bool,
              opts: _Options) -> tuple[datasets.Dataset | datasets.IterableDataset, LoadReport]:
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
    return _from_dataset(loaded, opts, label=label, fmt="hub")


def _from_dataset(dataset: datasets.Dataset | datasets.IterableDataset, opts: _Options, *, label: str, fmt: str,
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
        if isinstance(image_feature, datasets.Image) and image_feature.decode:
            dataset = dataset.cast_column("image", datasets.Image(decode=False))
        if "id" in features and features["id"] != datasets.Value("string"):
            dataset = dataset.cast_column("id", datasets.Value("string"))
        root = opts.image_root or default_root
        if root is not None and isinstance(image_feature, datasets.Value) and image_feature.dtype == "string":
            dataset = _map_image_paths(dataset, root)
    report = LoadReport(source=label, format=fmt)
    if isinstance(dataset, datasets.IterableDataset):
        return _validate_stream(dataset, opts, label, report), report
    report.num_records = len(dataset)
    return _validate_dataset(dataset, opts, label, report), report


def _map_image_paths(dataset: datasets.Dataset | datasets.IterableDataset, root: str):
    def join(batch: dict[str, list]) -> dict[str, list]:
        return {"image": _join_root(pa.array(batch["image"], pa.string()), root).to_pylist()}

    return dataset.map(join, batched=True, batch_size=10_000)


def _image_missing(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    if pa.types.is_struct(column.type):  # datasets.Image storage: {bytes, path}
        column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        has_bytes = pc.fill_null(pc.greater(pc.binary_length(column.field("bytes")), 0), False)
        has_path = ~_blank(column.field("path"))
        null = pc.is_null(column).to_numpy(zero_copy_only=False)
        return null | ~(has_bytes.to_numpy(zero_copy_only=False) | has_path)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return _blank(column)
    return pc.is_null(column).to_numpy(zero_copy_only=False)


def _row_problem(row: dict[str, Any], column: str, caption_column: str) -> tuple[str, str] | None:
    text = row["text"]
    if text is None or not str(text).strip():
        return caption_column, "empty caption"
    image = row["image"]
    if image is None or (isinstance(image, str) and not image.strip()) or (
            isinstance(image, dict) and not image.get("bytes") and not image.get("path")):
        return column, "missing image"
    return None


def _validate_dataset(dataset: datasets.Dataset, opts: _Options, label: str, report: LoadReport) -> datasets.Dataset:
    bad = np.zeros(len(dataset), dtype=bool)
    reasons: dict[int, tuple[str, str]] = {}
    batch_size = 50_000
    arrow = dataset.with_format("arrow")
    for start in range(0, len(dataset), batch_size):
        table = arrow[start:start + batch_size]
        blank_text = _blank(table.column("text").combine_chunks())
        no_image = _image_missing(table.column("image"))
        for i in np.flatnonzero(blank_text | no_image):
            field_name, reason = ((opts.caption_column, "empty caption") if blank_text[i]
                                  else (opts.image_column, "missing image"))
            reasons[start + int(i)] = (field_name, reason)
        bad[start:start + len(table)] = blank_text | no_image
    for i, (field_name, reason) in reasons.items():
        _reject(report, opts.errors, i, f"{label} row {i}", field_name, reason)
    if opts.check:
        bar = tqdm(total=len(dataset), desc=f"checking images ({opts.check})", unit="img", disable=None)
        try:
            for start in range(0, len(dataset), batch_size):
                refs = arrow[start:start + batch_size].column("image").to_pylist()
                for i, reason in _check_images(refs, opts.check, skip=bad, offset=start, progress=bar):
                    bad[i] = True
                    _reject(report, opts.errors, i, f"{label} row {i}", opts.image_column, reason,
                            path=_ref_path(refs[i - start]))
        finally:
            bar.close()
    if bad.any():
        dataset = dataset.select(np.flatnonzero(~bad))
    return dataset


def _validate_stream(dataset: datasets.IterableDataset, opts: _Options, label: str,
                     report: LoadReport) -> datasets.IterableDataset:
    """Lazy checks for streamed datasets: raise, or filter and count, while iterating."""

    def ok(row: dict[str, Any], index: int) -> bool:
        report.num_records += 1
        problem = _row_problem(row, opts.image_column, opts.caption_column)
        if problem is not None:
            _reject(report, opts.errors, index, f"{label} row {index}", *problem)
            return False
        reason = _image_problem(row["image"], opts.check) if opts.check else None
        if reason is not None:
            _reject(report, opts.errors, index, f"{label} row {index}", opts.image_column, reason,
                    path=_ref_path(row["image"]))
            return False
        return True

    return dataset.filter(ok, with_indices=True)
