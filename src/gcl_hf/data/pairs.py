"""Image–caption training pairs from local folders, JSON lists, the Hub or a ``Dataset``.

:func:`load_image_text_pairs` returns a ``datasets.Dataset`` with two columns, ``image`` and ``text``. Images
stay lazy: local sources give file paths (``string``), Hub / in-memory datasets keep their ``datasets.Image``
feature with ``decode=False``. Decoding happens in :class:`gcl_hf.data.collator.GCLCollator`, i.e. in the
dataloader workers. The readers live in :mod:`gcl_hf.data.sources`, the checks in
:mod:`gcl_hf.data.validation`.

Malformed records raise :class:`~gcl_hf.data.errors.DataFormatError`, which names the file, the record
(``record N`` = 0-based index in a JSON list, ``line N`` = 1-based line of a JSONL/CSV file, ``row N`` =
0-based row of a dataset) and the field. With ``errors="skip"`` they are dropped, counted and logged instead;
``return_report=True`` also returns the :class:`~gcl_hf.data.errors.LoadReport` that lists them (returned rather
than stashed on the dataset or in a global, so that it is typed, thread-safe and cannot go stale).
"""

from __future__ import annotations

import os
from typing import Any, Literal, overload

import datasets

from gcl_hf.data.errors import DataFormatError, DataSourceError, LoadReport, SkippedRecord
from gcl_hf.data.sources import from_dataset, from_file, from_hub, from_imagefolder
from gcl_hf.data.validation import CheckImages, ValidationOptions, parse_check_images
from gcl_hf.errors import ErrorMode, check_errors_mode

__all__ = [
    "DataFormatError",
    "DataSourceError",
    "LoadReport",
    "SkippedRecord",
    "load_image_text_pairs",
]

FORMATS = ("imagefolder", "llava", "json", "csv", "parquet", "hub", "dataset")


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
    check_images: CheckImages | bool = False,
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

    Text files are read as UTF-8 (a byte-order mark is dropped); a JSONL line or CSV row that is not UTF-8
    or not valid JSON is one bad record (file, line, byte offset); a JSON list that is not UTF-8 is refused
    whole. The format (LLaVA or plain captions) is told from the records as a whole, so a bad first record
    is reported as itself. A CSV header without ``image_column`` / ``caption_column``, a source with no
    records, or one whose every record is skipped, is an error whatever ``errors`` says.

    ``check_images`` (:data:`~gcl_hf.data.validation.CheckImages`): ``"exists"`` (or ``True``) verifies every
    image file exists (and is not empty) upfront, ``"decode"`` also decodes it (slow; threads + progress bar),
    ``"none"`` (or ``False``) checks nothing before training. ``errors="raise"`` raises
    :class:`DataFormatError` (or :class:`~gcl_hf.data.images.ImageLoadError`) on the first bad
    record; ``"skip"`` drops bad records, logs a warning and counts them in the report.
    ``id_column`` keeps that source field as an extra string column ``id`` (e.g. ``"id"`` for
    LCS-558K) so the collator can name failing records. ``streaming=True`` returns an
    ``IterableDataset`` (Hub datasets are then validated lazily while iterating).
    ``return_report=True`` returns ``(dataset, LoadReport)``.
    """
    check_errors_mode(errors)
    if format is not None and format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS} or None, got {format!r}")
    if image_column == caption_column:
        raise ValueError(f"image_column and caption_column are both {image_column!r}")
    check = parse_check_images(check_images)
    opts = ValidationOptions(image_root=os.fspath(image_root) if image_root is not None else None, image_column=image_column,
                    caption_column=caption_column, caption_turn=caption_turn, check=check, errors=errors,
                    id_column=id_column)

    fmt = format or _detect_format(source)
    if fmt == "dataset":
        if not isinstance(source, (datasets.Dataset, datasets.IterableDataset)):
            raise TypeError(f"format='dataset' needs a datasets.Dataset, got {type(source).__name__}")
        dataset, report = from_dataset(source, opts, label="dataset", fmt="dataset")
    elif fmt == "hub":
        dataset, report = from_hub(str(source), split, revision, streaming, opts)
    else:
        path = os.path.abspath(os.path.expanduser(os.fspath(source)))
        if not os.path.exists(path):
            raise DataSourceError(f"{path}: no such file or directory ({fmt} source)")
        if fmt == "imagefolder":
            dataset, report = from_imagefolder(path, split, opts)
        elif fmt == "parquet":
            table = _read_parquet(path, split)
            root = opts.image_root or os.path.dirname(path)
            dataset, report = from_dataset(table, opts, label=path, fmt="parquet", default_root=root)
        else:
            dataset, report = from_file(path, fmt, split, opts)
    report.log_summary()
    if isinstance(dataset, datasets.Dataset):
        _require_records(report)
    if streaming and isinstance(dataset, datasets.Dataset):
        dataset = dataset.to_iterable_dataset()
    return (dataset, report) if return_report else dataset


def _read_parquet(path: str, split: str) -> datasets.Dataset:
    import pyarrow as pa

    try:
        return datasets.Dataset.from_parquet(path, split=split)
    except (pa.ArrowException, OSError, ValueError) as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, pa.ArrowException) else exc
        raise DataFormatError(path, None, f"not a readable parquet file ({cause})") from exc


def _require_records(report: LoadReport) -> None:
    """No training data is never what the user meant: an empty source, or one whose every record was skipped."""
    if report.num_records == 0:
        raise DataFormatError(report.source or "source", None, "no records (is the file empty?)")
    if report.num_kept == 0:
        first = report.examples[0] if report.examples else "?"
        raise DataFormatError(report.source or "source", None,
                              f"all {report.num_records} records were skipped (errors='skip'); the first: {first}")


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
