"""Shared plumbing of the benchmark loaders: Arrow building, caching, JSONL reading, Hub fetch.

Rows are streamed into Arrow record batches (:class:`RowWriter`) so that a multi-million-row
candidate pool never exists as Python objects: large files go through :func:`cached_dataset`,
which writes an Arrow stream file once (keyed on the source file's path, size, mtime and the
loading options) and returns a memory-mapped :class:`datasets.Dataset`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa

from gcl_hf.benchmarks.errors import BenchmarkFormatError, BenchmarkNotFoundError, SkipReport
from gcl_hf.benchmarks.images import check_image_file
from gcl_hf.benchmarks.task import MODALITIES

__all__ = [
    "ITEM_FEATURES",
    "RowWriter",
    "cached_dataset",
    "check_image",
    "check_modality",
    "default_cache_dir",
    "iter_jsonl",
    "optional_str",
    "required_str",
    "resolve_root",
    "validate_check_images",
]

#: Columns shared by every queries/corpus Dataset (SPEC §5).
ITEM_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "text": datasets.Value("string"),
        "image": datasets.Value("string"),
        "modality": datasets.Value("string"),
    }
)

#: Bumped whenever the layout of cached Arrow files changes.
CACHE_VERSION = 1

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RowWriter:
    """Streams row dicts into Arrow record batches, in memory or into an Arrow stream file.

    Only ``batch_size`` rows are held as Python values at any time. :meth:`finish` returns the
    :class:`datasets.Dataset` (memory-mapped when a ``path`` was given).
    """

    def __init__(self, features: datasets.Features, path: str | os.PathLike | None = None, batch_size: int = 50_000):
        self.features = features
        self.schema = features.arrow_schema
        self.names = list(features)
        self.batch_size = batch_size
        self.path = None if path is None else Path(path)
        self.rows = 0
        self._columns: dict[str, list] = {name: [] for name in self.names}
        self._batches: list[pa.RecordBatch] = []
        self._sink = None
        self._writer = None
        if self.path is not None:
            self._sink = pa.OSFile(str(self.path), "wb")
            self._writer = pa.ipc.new_stream(self._sink, self.schema)

    def add(self, row: dict[str, Any]) -> None:
        for name in self.names:
            self._columns[name].append(row.get(name))
        self.rows += 1
        if len(self._columns[self.names[0]]) >= self.batch_size:
            self._flush()

    def _flush(self) -> None:
        if not self._columns[self.names[0]]:
            return
        arrays = [pa.array(self._columns[n], type=self.schema.field(n).type) for n in self.names]
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        if self._writer is not None:
            self._writer.write_batch(batch)
        else:
            self._batches.append(batch)
        self._columns = {name: [] for name in self.names}

    def close(self) -> None:
        """Flush and close the file (if any) without building a Dataset."""
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None

    def abort(self) -> None:
        """Close and delete a partially written file."""
        try:
            self.close()
        finally:
            if self.path is not None and self.path.exists():
                self.path.unlink()

    def finish(self) -> datasets.Dataset:
        self.close()
        info = datasets.DatasetInfo(features=self.features)
        if self.path is not None:
            return datasets.Dataset.from_file(str(self.path), info=info)
        table = pa.Table.from_batches(self._batches, schema=self.schema)
        return datasets.Dataset(table, info=info)


def default_cache_dir() -> Path:
    """``$HF_DATASETS_CACHE/gcl_hf_benchmarks``: where parsed candidate pools are cached."""
    return Path(datasets.config.HF_DATASETS_CACHE) / "gcl_hf_benchmarks"


def cached_dataset(
    source: Path,
    *,
    features: datasets.Features,
    build: Callable[[RowWriter, SkipReport], np.ndarray | None],
    key: dict[str, Any],
    skips: SkipReport,
    cache_dir: str | os.PathLike | None = None,
) -> datasets.Dataset:
    """Arrow-backed Dataset parsed from ``source`` by ``build``, cached on disk.

    ``build(writer, skips)`` streams rows into ``writer`` and may return a boolean mask of the
    rows to keep (rows found bad only after the whole file was read, e.g. duplicates). The cache entry is keyed on
    ``source``'s resolved path, size and mtime plus ``key`` (every option that changes the
    rows). The skip summary is stored next to it and merged into ``skips`` on every load, so a
    cached load reports the same skipped records as the first one.
    """
    source = Path(source)
    stat = source.stat()
    payload = {
        "version": CACHE_VERSION,
        "path": str(source.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "errors": skips.errors,
        "features": features.to_dict(),
        **key,
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    arrow_path = directory / f"{source.stem}-{digest}.arrow"
    meta_path = directory / f"{source.stem}-{digest}.json"
    info = datasets.DatasetInfo(features=features)
    if arrow_path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        skips.merge(meta["skipped"])
        return datasets.Dataset.from_file(str(arrow_path), info=info)

    tmp_path = directory / f"{arrow_path.name}.{os.getpid()}.tmp"
    local = SkipReport(skips.errors)
    writer = RowWriter(features, tmp_path)
    try:
        keep = build(writer, local)
        writer.close()
        if keep is not None and not keep.all():
            _filter_arrow_file(tmp_path, keep, features)
    except BaseException:
        writer.abort()
        raise
    meta_tmp = directory / f"{meta_path.name}.{os.getpid()}.tmp"
    meta_tmp.write_text(json.dumps({"skipped": local.to_dict(), "rows": writer.rows, "source": str(source)}))
    os.replace(tmp_path, arrow_path)
    os.replace(meta_tmp, meta_path)
    skips.merge(local)
    return datasets.Dataset.from_file(str(arrow_path), info=info)


def _filter_arrow_file(path: Path, keep: np.ndarray, features: datasets.Features) -> None:
    """Rewrite the Arrow stream file ``path`` with only the rows where ``keep`` is true."""
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_stream(source).read_all()
    filtered = table.filter(pa.array(keep))
    tmp = path.with_name(path.name + ".filtered")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, features.arrow_schema) as stream:
        for batch in filtered.to_batches(max_chunksize=50_000):
            stream.write_batch(batch)
    del table, filtered
    os.replace(tmp, path)


def iter_jsonl(path: Path, skips: SkipReport) -> Iterator[tuple[int, dict]]:
    """``(line_number, object)`` for each non-blank line of a JSONL file (1-based lines).

    A line that is not valid JSON, or not a JSON object, goes to ``skips`` (raised or counted).
    """
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except ValueError as exc:
                skips.handle(BenchmarkFormatError(f"malformed JSON ({exc})", file=path, line=number))
                continue
            if not isinstance(obj, dict):
                skips.handle(
                    BenchmarkFormatError(f"expected a JSON object, got {type(obj).__name__}", file=path, line=number)
                )
                continue
            yield number, obj


def optional_str(obj: dict, field: str, *, file: Any, line: int | None = None, row: int | None = None) -> str | None:
    """``obj[field]`` as a string, ``None`` when absent/null/empty; an error for other types."""
    value = obj.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BenchmarkFormatError(
            f"expected a string, got {type(value).__name__} {value!r}", file=file, line=line, row=row, field=field
        )
    return value


def required_str(obj: dict, field: str, *, file: Any, line: int | None = None, row: int | None = None, why: str = "") -> str:
    """``obj[field]`` as a non-empty string; a :class:`BenchmarkFormatError` otherwise."""
    if field not in obj:
        raise BenchmarkFormatError(f"missing field{why}", file=file, line=line, row=row, field=field)
    value = optional_str(obj, field, file=file, line=line, row=row)
    if value is None:
        raise BenchmarkFormatError(f"empty value{why}", file=file, line=line, row=row, field=field)
    return value


def check_modality(value: Any, *, field: str, file: Any, line: int | None = None, row: int | None = None) -> str:
    if value not in MODALITIES:
        raise BenchmarkFormatError(
            f"unknown modality {value!r} (expected one of {', '.join(MODALITIES)})",
            file=file,
            line=line,
            row=row,
            field=field,
        )
    return value


def check_image(
    path: str | None,
    *,
    image_root: str | os.PathLike | None,
    mode: bool | str,
    file: Any,
    line: int | None = None,
    row: int | None = None,
    field: str,
) -> None:
    """Load-time image check: nothing (``mode=False``), existence (``True``) or a full decode (``"decode"``)."""
    if not mode or path is None:
        return
    check_image_file(path, image_root=image_root, decode=(mode == "decode"), file=file, line=line, row=row, field=field)


def validate_check_images(value: Any) -> bool | str:
    if value not in (True, False, "decode"):
        raise ValueError(f"check_images must be True, False or 'decode', got {value!r}")
    return value


def resolve_root(
    root_or_repo: str | os.PathLike | None,
    *,
    default_repo: str,
    allow_patterns: list[str],
    revision: str | None,
    what: str,
) -> tuple[Path, bool]:
    """``(local directory, came_from_hub)`` for a local path or a Hub dataset repo id.

    A local directory is used as is. Otherwise an ``owner/name`` string (or ``None``, meaning
    ``default_repo``) is fetched with ``huggingface_hub.snapshot_download(repo_type="dataset")``,
    restricted to ``allow_patterns``. Failures (offline, unknown repo) raise
    :class:`BenchmarkNotFoundError` explaining both possibilities.
    """
    if root_or_repo is None:
        root_or_repo = default_repo
    text = os.fspath(root_or_repo)
    path = Path(text).expanduser()
    if path.is_dir():
        return path, False
    if path.exists():
        raise BenchmarkNotFoundError(f"{what}: {text!r} is a file; expected the benchmark's root directory")
    if not _REPO_ID.match(text):
        raise BenchmarkNotFoundError(f"{what}: no such directory {text!r} (and it is not a Hub repo id 'owner/name')")

    import huggingface_hub
    from huggingface_hub import constants

    try:
        local = huggingface_hub.snapshot_download(
            text, repo_type="dataset", revision=revision, allow_patterns=allow_patterns
        )
    except Exception as exc:  # noqa: BLE001 - every Hub failure becomes one clear error
        if constants.HF_HUB_OFFLINE:
            reason = "the Hub is offline (HF_HUB_OFFLINE=1) and these files are not in the local Hugging Face cache"
        else:
            reason = f"{type(exc).__name__}: {exc}"
        raise BenchmarkNotFoundError(
            f"{what}: {text!r} is not a local directory, and downloading the Hub dataset repo {text!r} "
            f"(revision {revision or 'main'}, files {allow_patterns}) failed: {reason}. "
            "Pass the path of a local copy of the benchmark instead."
        ) from exc
    return Path(local), True

