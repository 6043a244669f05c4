"""Errors raised by the benchmark loaders, and the counter behind ``errors="skip"``.

Every malformed record is reported as a :class:`BenchmarkFormatError` that names the file, the
line (text formats: JSONL, TSV, CSV, qrels) or row (parquet), and the field. With
``errors="raise"`` (the default) the first one stops loading; with ``errors="skip"`` a
:class:`SkipCounter` drops the record, counts it and the loader reports the total (a logger
warning, ``task.meta["skipped"]`` and ``task.meta["skip_report"]``), so a metric is never
computed on silently reduced data.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

__all__ = ["BenchmarkFormatError", "BenchmarkNotFoundError", "SkipCounter", "ERRORS_MODES"]

#: Accepted values of the loaders' ``errors`` option.
ERRORS_MODES = ("raise", "skip")

#: How many skipped-record messages a :class:`SkipCounter` keeps verbatim.
MAX_EXAMPLES = 20


class BenchmarkFormatError(ValueError):
    """A benchmark file holds a malformed record.

    ``file``, ``line`` (1-based, text files), ``row`` (0-based, tables) and ``field`` are kept as
    attributes and named in the message, e.g.
    ``/data/M-BEIR/query/test/mbeir_mscoco_task0_test.jsonl, line 7, field 'query_modality': unknown modality 'video'``.
    """

    def __init__(
        self,
        reason: str,
        *,
        file: Any = None,
        line: int | None = None,
        row: int | None = None,
        field: str | None = None,
    ):
        self.reason = reason
        self.file = None if file is None else str(file)
        self.line = line
        self.row = row
        self.field = field
        where = []
        if self.file is not None:
            where.append(self.file)
        if line is not None:
            where.append(f"line {line}")
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {reason}" if prefix else reason)

    def __reduce__(self):  # keep the attributes across process boundaries
        return (_rebuild, (self.reason, self.file, self.line, self.row, self.field))


def _rebuild(reason, file, line, row, field) -> BenchmarkFormatError:
    return BenchmarkFormatError(reason, file=file, line=line, row=row, field=field)


class BenchmarkNotFoundError(FileNotFoundError):
    """A benchmark's files are neither in a local directory nor obtainable from the Hub."""


class SkipCounter:
    """Applies the ``errors`` policy to :class:`BenchmarkFormatError` s and counts skipped records.

    ``handle(err)`` re-raises under ``errors="raise"``; under ``errors="skip"`` it counts the
    record (per file and field) and keeps the first :data:`MAX_EXAMPLES` messages.
    """

    def __init__(self, errors: str = "raise"):
        if errors not in ERRORS_MODES:
            raise ValueError(f"errors must be one of {ERRORS_MODES}, got {errors!r}")
        self.errors = errors
        self.count = 0
        self.by_file: Counter[str] = Counter()
        self.by_field: Counter[str] = Counter()
        self.examples: list[str] = []

    def handle(self, err: BenchmarkFormatError) -> None:
        """Raise ``err`` (``errors="raise"``) or record it as one skipped record."""
        if self.errors == "raise":
            raise err
        self.count += 1
        self.by_file[err.file or "?"] += 1
        self.by_field[err.field or "?"] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(str(err))

    def merge(self, other: "SkipCounter | dict") -> None:
        """Add another counter's (or its :meth:`to_dict`'s) records to this one."""
        data = other.to_dict() if isinstance(other, SkipCounter) else other
        self.count += int(data["count"])
        self.by_file.update(data["by_file"])
        self.by_field.update(data["by_field"])
        room = MAX_EXAMPLES - len(self.examples)
        if room > 0:
            self.examples.extend(data["examples"][:room])

    def to_dict(self) -> dict:
        """A JSON-serialisable summary: ``count``, ``by_file``, ``by_field``, ``examples``."""
        return {
            "count": self.count,
            "by_file": dict(self.by_file),
            "by_field": dict(self.by_field),
            "examples": list(self.examples),
        }

    def copy(self) -> "SkipCounter":
        new = SkipCounter(self.errors)
        new.merge(self)
        return new

    def report(self, logger: logging.Logger, what: str) -> None:
        """Log one warning summarising the skipped records of ``what`` (nothing if none)."""
        if not self.count:
            return
        files = ", ".join(f"{name} ({n})" for name, n in self.by_file.most_common())
        first = f"; first: {self.examples[0]}" if self.examples else ""
        logger.warning("%s: skipped %d malformed record(s) [errors='skip'] in %s%s", what, self.count, files, first)
