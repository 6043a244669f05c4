"""Errors and the load report of the training-data readers (on the library's one record-error model)."""

from __future__ import annotations

import logging
from typing import Any

from gcl_hf.errors import ErrorMode, RecordError, SkipReport, SkippedRecord

__all__ = ["DataFormatError", "DataSourceError", "LoadReport", "SkippedRecord"]

logger = logging.getLogger("gcl_hf.data")


class DataFormatError(RecordError):
    """A malformed training record: ``location`` (file and record/line/row), ``field`` and ``reason``."""

    def __init__(self, location: str, field: str | None, reason: str, **details: Any) -> None:
        super().__init__(reason, location=location, field=field, **details)


class DataSourceError(OSError):
    """The source itself cannot be opened (missing file or folder, Hub dataset unreachable, bad encoding)."""


class LoadReport(SkipReport):
    """What :func:`~gcl_hf.data.pairs.load_image_text_pairs` read (``num_records``), kept (``num_kept``) and
    skipped (``num_skipped``, ``skipped``). For a streamed Hub dataset the counts grow while the stream is
    iterated (in the process that iterates it)."""

    def __init__(self, source: str, format: str, num_records: int = 0, errors: ErrorMode = "raise") -> None:
        super().__init__(errors, source=source)
        self.format = format
        self.num_records = num_records

    def __repr__(self) -> str:
        return (f"LoadReport(source={self.source!r}, format={self.format!r}, num_records={self.num_records}, "
                f"num_skipped={self.num_skipped})")

    def log_summary(self) -> None:
        """One warning when records were skipped."""
        self.log(logger, f"loading {self.source}")
