"""Shared plumbing of the benchmark loaders: Arrow caching, JSONL reading, field checks, Hub fetch.

A multi-million-row candidate pool never exists as Python objects: :func:`cached_dataset` streams its rows
through ``datasets.Dataset.from_generator`` into an Arrow file once (keyed on the source file's path, size, mtime
and the loading options) and returns the memory-mapped :class:`datasets.Dataset`; small tables (queries) are
built with ``Dataset.from_list``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets
from datasets.exceptions import DatasetGenerationError

from gcl_hf.atomic import atomic_write_text
from gcl_hf.benchmarks.errors import BenchmarkFormatError, BenchmarkNotFoundError, SkipReport
from gcl_hf.benchmarks.images import check_image_file
from gcl_hf.benchmarks.task import MODALITIES
from gcl_hf.data.textfiles import DecodedText, MakeError, iter_lines, read_text
from gcl_hf.errors import ErrorMode

#: Why a text holding a NUL character is refused.
NUL_REASON = "contains a NUL character (binary data, or a UTF-16 file read as UTF-8?)"

__all__ = [
    "ITEM_FEATURES",
    "cached_dataset",
    "check_image",
    "check_modality",
    "default_cache_dir",
    "iter_jsonl",
    "iter_text_lines",
    "optional_str",
    "read_text_file",
    "require_rows",
    "required_str",
    "resolve_root",
    "rows_dataset",
]

#: Columns shared by every queries/corpus Dataset (see `RetrievalTask`).
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


def rows_dataset(rows: list[dict[str, Any]], features: datasets.Features = ITEM_FEATURES) -> datasets.Dataset:
    """A small in-memory Dataset of ``rows`` (queries, MMEB and CoVR items); empty lists keep the columns."""
    return datasets.Dataset.from_dict({name: [row.get(name) for row in rows] for name in features}, features=features)


def default_cache_dir() -> Path:
    """``$HF_DATASETS_CACHE/gcl_hf_benchmarks``: where parsed candidate pools are cached."""
    return Path(datasets.config.HF_DATASETS_CACHE) / "gcl_hf_benchmarks"


def cached_dataset(
    source: Path,
    *,
    features: datasets.Features,
    rows: Callable[..., Iterator[dict[str, Any]]],
    rows_kwargs: dict[str, Any],
    key: dict[str, Any],
    skips: SkipReport,
    cache_dir: str | os.PathLike | None = None,
) -> datasets.Dataset:
    """Arrow-backed Dataset of the rows ``rows(skips, **rows_kwargs)`` yields from ``source``, cached on disk.

    ``datasets.Dataset.from_generator`` writes and memory-maps the Arrow file; its cache entry is keyed on
    ``source``'s resolved path, size and mtime plus ``key`` (every option that changes the rows). The skip
    summary of the first build is stored beside it and merged into ``skips`` on every load, so a cached load
    reports the same skipped records as the first one.
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
    entry = directory / f"{source.stem}-{digest}"
    meta_path = entry / "skipped.json"
    meta = _read_meta(meta_path)
    if meta is None and entry.exists():  # an interrupted build, or a damaged summary: build again
        shutil.rmtree(entry)
    try:
        dataset = datasets.Dataset.from_generator(
            _generate_rows,
            features=features,
            cache_dir=str(entry),
            fingerprint=digest,
            gen_kwargs={"rows": rows, "rows_kwargs": rows_kwargs, "errors": skips.errors, "meta_path": str(meta_path)},
        )
    except DatasetGenerationError as err:  # datasets wraps what the generator raised: show the record's error
        if isinstance(err.__cause__, Exception):
            raise err.__cause__ from None
        raise
    except ValueError:  # datasets refuses a generator that yields nothing; an empty file is the caller's to judge
        meta = _read_meta(meta_path)
        if meta is None or meta.get("num_rows") != 0:
            raise
        dataset = rows_dataset([], features)
    meta = meta or _read_meta(meta_path)
    if meta is None:
        raise BenchmarkFormatError(f"the skip summary {meta_path} was not written; delete {entry} and load again",
                                   file=source)
    skips.merge(meta["skipped"])
    return dataset


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and isinstance(meta.get("skipped"), dict) else None


def _generate_rows(rows: Callable[..., Iterator[dict[str, Any]]], rows_kwargs: dict[str, Any], errors: ErrorMode,
                   meta_path: str) -> Iterator[dict[str, Any]]:
    """The generator `cached_dataset` hands to ``Dataset.from_generator``; writes the skip summary at the end."""
    local = SkipReport(errors)
    count = 0
    for row in rows(local, **rows_kwargs):
        count += 1
        yield row
    Path(meta_path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(meta_path, json.dumps({"skipped": local.to_dict(), "num_rows": count}))


def iter_jsonl(path: Path, skips: SkipReport) -> Iterator[tuple[int, dict]]:
    """``(line_number, object)`` for each non-blank line of a JSONL file (1-based lines; a UTF-8 byte-order mark is
    dropped). A line that is not UTF-8 (named with its byte offset), not valid JSON (a cut-off last line says so) or
    not a JSON object goes to ``skips`` (raised or counted)."""
    for number, text, error in iter_lines(path, _line_error(path)):
        if error is not None:
            skips.handle(error)
            continue
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError as exc:
            hint = "; the line has no newline at the end: the file looks truncated" if not text.endswith("\n") else ""
            skips.handle(BenchmarkFormatError(f"malformed JSON ({exc}){hint}", file=path, line=number))
            continue
        if not isinstance(obj, dict):
            skips.handle(
                BenchmarkFormatError(f"expected a JSON object, got {type(obj).__name__}", file=path, line=number)
            )
            continue
        yield number, obj


def _line_error(path: Any) -> MakeError:
    return lambda reason, line, offset=None: BenchmarkFormatError(reason, file=path, line=line, offset=offset)


def read_text_file(path: Path) -> DecodedText:
    """A whole (small) text file as UTF-8, byte-order mark dropped; lines that are not UTF-8 in ``bad_lines``."""
    return read_text(path, _line_error(path))


def iter_text_lines(path: Path) -> Iterator[tuple[int, str | None, BenchmarkFormatError | None]]:
    """``(line, text, None)`` per line of a text file, or ``(line, None, error)`` for one that is not UTF-8."""
    return iter_lines(path, _line_error(path))  # type: ignore[return-value]


def require_rows(count: int, *, what: str, file: Any, skips: SkipReport) -> None:
    """A benchmark file that yields no ``what`` (queries, candidates, rows) is an error naming it, whatever
    ``errors`` says: a task with an empty corpus or no queries would report a meaningless metric."""
    if count:
        return
    name = str(file)
    mine = [s for s in skips.skipped if s.location.startswith(name)]
    skipped = skips.by_source.get(name, 0)
    if skipped:
        first = f"; the first: {mine[0]}" if mine else ""
        raise BenchmarkFormatError(f"all {skipped} {what} were skipped (errors='skip'){first}", file=file)
    raise BenchmarkFormatError(f"no {what} (is the file empty?)", file=file)


def optional_str(obj: dict, field: str, *, file: Any, line: int | None = None, row: int | None = None) -> str | None:
    """``obj[field]`` as a string, ``None`` when absent/null/empty; an error for other types and for NUL characters."""
    value = obj.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BenchmarkFormatError(
            f"expected a string, got {type(value).__name__} {value!r}", file=file, line=line, row=row, field=field
        )
    if "\x00" in value:
        raise BenchmarkFormatError(NUL_REASON, file=file, line=line, row=row, field=field)
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
    """Load-time image check (``mode`` from :func:`~gcl_hf.data.validation.parse_check_images`): nothing
    (``"none"``), existence (``"exists"``) or a full decode (``"decode"``)."""
    if mode == "none" or path is None:
        return
    check_image_file(path, image_root=image_root, decode=(mode == "decode"), file=file, line=line, row=row, field=field)


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

