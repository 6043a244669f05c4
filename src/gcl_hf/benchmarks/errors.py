"""Errors raised by the benchmark loaders (on the library's one record-error model).

Every malformed record is reported as a :class:`BenchmarkFormatError` that names the file, the line (text
formats: JSONL, TSV, CSV, qrels) or row (parquet), and the field. With ``errors="raise"`` (the default) the
first one stops loading; with ``errors="skip"`` a :class:`~gcl_hf.errors.SkipReport` drops the record, counts it
and the loader reports the total (a logger warning, ``task.meta["skipped"]`` and ``task.meta["skip_report"]``),
so a metric is never computed on silently reduced data.

Text files are read as UTF-8 (a byte-order mark is dropped); a line that is not UTF-8 is one bad record naming its
byte offset. A file that yields nothing (an empty pool, no qrels judgement, every query skipped, a table with no
rows), a parquet column of the wrong type or a CSV without a required column is an error whatever ``errors`` says:
never a task with an empty corpus.
"""

from __future__ import annotations

from typing import Any

from gcl_hf.errors import ERRORS_MODES, RecordError, SkipReport

__all__ = ["BenchmarkFormatError", "BenchmarkNotFoundError", "ERRORS_MODES", "SkipReport"]


class BenchmarkFormatError(RecordError):
    """A benchmark file holds a malformed record.

    ``file``, ``line`` (1-based, text files), ``row`` (0-based, tables) and ``field`` are kept as attributes and
    named in the message, e.g.
    ``/data/M-BEIR/query/test/mbeir_mscoco_task0_test.jsonl, line 7, field 'query_modality': unknown modality 'video'``.
    """

    def __init__(self, reason: str, *, file: Any = None, line: int | None = None, row: int | None = None,
                 field: str | None = None, **details: Any) -> None:
        super().__init__(reason, source=details.pop("source", file), line=line, row=row, field=field, **details)

    @property
    def file(self) -> str | None:
        """The benchmark file (the record's source)."""
        return self.source


class BenchmarkNotFoundError(FileNotFoundError):
    """A benchmark's files are neither in a local directory nor obtainable from the Hub."""
