"""One model for bad input records, everywhere user bytes enter: training data, benchmark files, images,
encoding and caches.

A :class:`RecordError` says *where* (the source file or dataset, and the line, row or record in it), *which
field*, and *why*; every family of input errors subclasses it (`DataFormatError`, `BenchmarkFormatError`,
`ImageLoadError`, `EncodingError`), so ``except RecordError`` catches them all and the command line prints them
as one line. A :class:`SkipReport` applies the ``errors="raise" | "skip"`` policy: it re-raises, or counts the
record (by source and by field) and keeps the first ones verbatim, so a metric is never computed on silently
reduced data.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

__all__ = ["ERRORS_MODES", "MAX_KEPT", "ErrorMode", "RecordError", "SkipReport", "SkippedRecord", "check_errors_mode",
           "note_details"]

#: Every ``errors=`` option (``errors``, ``image_errors``, ``data_errors``, ``--errors``): stop at the first bad
#: record with an error naming it, or skip it and count it.
ErrorMode = Literal["raise", "skip"]
#: The values of :data:`ErrorMode` (argparse ``choices``; this module stays import-light for ``--help``).
ERRORS_MODES: tuple[ErrorMode, ...] = get_args(ErrorMode)
#: How many skipped records a :class:`SkipReport` keeps in full (the counts are always exact).
MAX_KEPT = 1000

_FIELDS = ("source", "line", "row", "record", "field", "path", "location", "offset")


def check_errors_mode(errors: str, name: str = "errors") -> ErrorMode:
    """The one parser of an ``errors=`` option: ``errors`` if it is ``"raise"`` or ``"skip"``, else a `ValueError`
    naming the option (``name``)."""
    if errors not in ERRORS_MODES:
        raise ValueError(f"{name} must be one of {ERRORS_MODES}, got {errors!r}")
    return errors  # type: ignore[return-value]  # checked just above


#: The traceback note that carries a record error's fields out of a dataloader worker (see `note_details`).
_NOTE = "gcl-hf record: "
_WORKER_MESSAGE = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")


class _RecordErrorType(type):
    """Rebuilds a record error that a torch DataLoader worker raised: torch re-raises it in the main process as
    ``ErrorClass(message=<"Caught ... in DataLoader worker process N." + the worker's traceback>)`` (because the
    class has a ``message`` attribute); that text becomes the original error again, its fields included when
    the worker added `note_details`, so the command line's one line names the row and the path."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if not args and set(kwargs) == {"message"}:
            return _from_message(cls, str(kwargs["message"]))
        return super().__call__(*args, **kwargs)


def _from_message(cls: type[RecordError], text: str) -> RecordError:
    if not _WORKER_MESSAGE.match(text):
        return _rebuild(cls, text, {})
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    note = next((line for line in reversed(lines) if line.startswith(_NOTE)), None)
    if note is not None:
        try:
            data = json.loads(note[len(_NOTE):])
            return _rebuild(cls, data["reason"], data["details"])
        except (ValueError, KeyError, TypeError):
            pass
    last = next((line for line in reversed(lines) if not line.startswith(_NOTE)), text)
    return _rebuild(cls, last.split(": ", 1)[1] if ": " in last else last, {})


def note_details(exc: RecordError) -> RecordError:
    """Add ``exc``'s reason and fields to its traceback as a note, so that when a dataloader worker raises it the
    main process rebuilds the same error (torch passes only the traceback text across). Returns ``exc``."""
    if not any(str(n).startswith(_NOTE) for n in getattr(exc, "__notes__", ())):
        exc.add_note(_NOTE + json.dumps({"reason": exc.reason, "details": exc.details()}, default=str))
    return exc


class RecordError(ValueError, metaclass=_RecordErrorType):
    """A malformed or unreadable input record.

    Args:
        reason: what is wrong, e.g. ``"unknown modality 'video'"``.
        source: the file or dataset the record comes from.
        line: 1-based line of a text file (JSONL, CSV, TSV, qrels).
        row: 0-based row of a table or dataset (an int), or a ready-made description of the record.
        record: 0-based index in a JSON list.
        field: the field (column, key) at fault.
        path: a file the record points at (an image), when that file is the problem.
        location: a ready-made place (``"x.json: record 3"``) used instead of source/line/row/record.
        offset: byte offset in the source file of the problem (bytes that are not UTF-8), when known.

    The message reads ``<source>, line 7, field 'query_modality': unknown modality 'video'``.
    """

    def __init__(
        self,
        reason: str,
        *,
        source: Any = None,
        line: int | None = None,
        row: Any = None,
        record: int | None = None,
        field: str | None = None,
        path: str | None = None,
        location: str | None = None,
        offset: int | None = None,
    ) -> None:
        self.reason = reason
        self.offset = offset
        self.source = None if source is None else str(source)
        self.line, self.row, self.record, self.field, self.path = line, row, record, field, path
        self._location = location
        super().__init__(self._message())

    @property
    def location(self) -> str:
        """Where the record is: source and line/row/record (empty when unknown)."""
        if self._location is not None:
            return self._location
        parts = [] if self.source is None else [self.source]
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.row is not None:
            parts.append(self.row if isinstance(self.row, str) else f"row {self.row}")
        if self.record is not None:
            parts.append(f"record {self.record}")
        return ", ".join(parts)

    def _message(self) -> str:
        where = [self.location] if self.location else []
        if self.field is not None:
            where.append(f"field {self.field!r}")
        if self.path is not None:
            where.append(f"path {self.path!r}")
        prefix = ", ".join(where)
        return f"{prefix}: {self.reason}" if prefix else self.reason

    def details(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this error (also what crosses process boundaries)."""
        values = {"source": self.source, "line": self.line, "row": self.row, "record": self.record,
                  "field": self.field, "path": self.path, "location": self._location, "offset": self.offset}
        return {k: v for k, v in values.items() if v is not None}

    @property
    def message(self) -> str:
        """The one-line message (also what makes torch's worker re-raise go through ``message=``)."""
        return self._message()

    def __reduce__(self):  # keep the attributes across process boundaries (dataloader workers)
        return (_rebuild, (type(self), self.reason, self.details()))


def _rebuild(cls: type[RecordError], reason: str, details: dict[str, Any]) -> RecordError:
    err = RecordError.__new__(cls)
    RecordError.__init__(err, reason, **details)
    return err


@dataclass(frozen=True)
class SkippedRecord:
    """One record dropped under ``errors="skip"``."""

    index: int | None  # 0-based position in the source when known (JSON list index, data line, dataset row)
    location: str
    field: str | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.location}: field {self.field!r}" if self.field else self.location
        return f"{where}: {self.reason}"


class SkipReport:
    """The ``errors`` policy and what it skipped.

    ``handle(err)`` re-raises under ``errors="raise"``; under ``errors="skip"`` it counts the record (per
    source and per field) and keeps the first :data:`MAX_KEPT` of them. ``num_records`` (when the reader sets
    it) is how many records were read, so ``num_kept`` says what remains.
    """

    def __init__(self, errors: ErrorMode = "raise", *, source: Any = None) -> None:
        self.errors = check_errors_mode(errors)
        self.source = None if source is None else str(source)
        self.num_records = 0
        self.count = 0
        self.by_source: Counter[str] = Counter()
        self.by_field: Counter[str] = Counter()
        self.skipped: list[SkippedRecord] = []

    # the names the training-data report has always used
    @property
    def num_skipped(self) -> int:
        return self.count

    @property
    def num_kept(self) -> int:
        return self.num_records - self.count

    def handle(self, err: RecordError, *, index: int | None = None) -> None:
        """Raise ``err`` (``errors="raise"``) or record it as one skipped record."""
        if self.errors == "raise":
            raise err
        self.count += 1
        self.by_source[err.source or self.source or "?"] += 1
        self.by_field[err.field or "?"] += 1
        if len(self.skipped) < MAX_KEPT:
            self.skipped.append(SkippedRecord(index, err.location, err.field, err.reason))

    def merge(self, other: "SkipReport | Mapping[str, Any]") -> None:
        """Add another report's (or its :meth:`to_dict`'s) records to this one."""
        data = other.to_dict() if isinstance(other, SkipReport) else other
        self.count += int(data["count"])
        self.num_records += int(data.get("num_records", 0))
        self.by_source.update(data["by_source"])
        self.by_field.update(data["by_field"])
        room = MAX_KEPT - len(self.skipped)
        for item in list(data["skipped"])[: max(room, 0)]:
            self.skipped.append(SkippedRecord(item.get("index"), item["location"], item.get("field"), item["reason"]))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (what task metadata and caches store)."""
        return {
            "count": self.count,
            "num_records": self.num_records,
            "by_source": dict(self.by_source),
            "by_field": dict(self.by_field),
            "skipped": [{"index": s.index, "location": s.location, "field": s.field, "reason": s.reason}
                        for s in self.skipped],
        }

    @property
    def examples(self) -> list[str]:
        """The kept records as one-line messages."""
        return [str(s) for s in self.skipped]

    def copy(self) -> "SkipReport":
        new = type(self).__new__(type(self))
        SkipReport.__init__(new, self.errors, source=self.source)
        new.merge(self)
        return new

    def log(self, logger: logging.Logger, what: str) -> None:
        """One warning summarising the skipped records of ``what`` (nothing if none)."""
        if not self.count:
            return
        sources = ", ".join(f"{name} ({n})" for name, n in self.by_source.most_common())
        shown = "; ".join(self.examples[:3])
        more = f" (and {self.count - 3} more)" if self.count > 3 else ""
        total = f" of {self.num_records}" if self.num_records else ""
        logger.warning("%s: skipped %d%s malformed record(s) [errors='skip'] in %s: %s%s",
                       what, self.count, total, sources, shown, more)
