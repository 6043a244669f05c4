"""Users' text files (JSON, JSONL, CSV, TSV, qrels, metadata): read as UTF-8 the same way everywhere.

* A UTF-8 byte-order mark (Excel, Notepad) is dropped; left in, it becomes part of the first header name or id.
* Lines are split on ``\\n`` only (``\\r\\n`` works too), never on the other Unicode line breaks (U+2028, U+0085,
  ...) that ``str.splitlines`` also splits on and that captions may hold raw.
* Bytes that are not UTF-8 are reported per line, with their byte offset in the file, as the caller's
  :class:`~gcl_hf.errors.RecordError` (``make_error(reason, line)``), so one bad line can be skipped under
  ``errors="skip"``; a UTF-16 / UTF-32 file (its byte-order mark says so) is refused as a whole.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from gcl_hf.errors import RecordError

__all__ = ["BOM", "DecodedText", "MakeError", "csv_rows", "iter_lines", "read_text", "split_lines", "utf8_problem"]

#: The UTF-8 byte-order mark.
BOM = b"\xef\xbb\xbf"
#: Builds the caller's error for a problem on a (1-based) line: ``make_error(reason, line, offset=None)``, ``offset``
#: being the byte offset of a byte that is not UTF-8 (kept as the error's ``offset``).
MakeError = Callable[..., RecordError]

_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
              (b"\xfe\xff", "UTF-16"))


def utf8_problem(raw: bytes, offset: int = 0) -> tuple[str, int] | None:
    """``None`` when ``raw`` is UTF-8, else ``(reason, byte offset in the file)`` of its first bad byte
    (``offset`` = where ``raw`` starts in the file)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = offset + exc.start
        return f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at byte offset {at} (save the file as UTF-8)", at
    return None


def _refuse_wide(head: bytes, make_error: MakeError) -> None:
    for mark, name in _WIDE_BOMS:
        if head.startswith(mark):
            raise make_error(f"the file is {name} (it starts with a {name} byte-order mark); save it as UTF-8", 1)


def split_lines(text: str) -> list[str]:
    """``text``'s lines without their ends, split on ``\\n`` only (a trailing ``\\r`` is dropped)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


@dataclass
class DecodedText:
    """A whole file as text. Lines that are not UTF-8 are in ``bad_lines`` (1-based line → the caller's error) and
    their bytes appear in ``text`` as lone surrogates (``surrogateescape``), so line numbers stay true."""

    text: str
    bad_lines: dict[int, RecordError] = field(default_factory=dict)


def read_text(path: str | os.PathLike, make_error: MakeError) -> DecodedText:
    """Read ``path`` as UTF-8 (byte-order mark dropped), listing the lines that are not UTF-8."""
    with open(path, "rb") as handle:
        raw = handle.read()
    _refuse_wide(raw[:4], make_error)
    start = len(BOM) if raw.startswith(BOM) else 0
    body = raw[start:]
    try:
        return DecodedText(body.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    bad: dict[int, RecordError] = {}
    offset = start
    for number, line in enumerate(body.split(b"\n"), start=1):
        problem = utf8_problem(line, offset)
        if problem is not None:
            bad[number] = make_error(problem[0], number, offset=problem[1])
        offset += len(line) + 1
    return DecodedText(body.decode("utf-8", "surrogateescape"), bad)


def iter_lines(path: str | os.PathLike, make_error: MakeError) -> Iterator[tuple[int, str | None, RecordError | None]]:
    """``(line number, text, None)`` for each line of ``path`` (streamed; the text keeps its ``\\n``, absent only
    on a last line the file cuts short), or ``(line number, None, error)`` for a line that is not UTF-8."""
    with open(path, "rb") as handle:
        offset = 0  # where the next line starts in the file
        for number, raw in enumerate(handle, start=1):
            start, offset = offset, offset + len(raw)
            if number == 1:
                _refuse_wide(raw[:4], make_error)
                if raw.startswith(BOM):
                    raw, start = raw[len(BOM):], start + len(BOM)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                reason, at = utf8_problem(raw, start) or ("not valid UTF-8", None)
                yield number, None, make_error(reason, number, offset=at)
                continue
            yield number, text, None


def csv_rows(text: str, delimiter: str = ",",
             make_error: MakeError | None = None) -> Iterator[tuple[int, int, list[str]]]:
    """``(first line, last line, fields)`` of each non-blank CSV/TSV row of ``text`` (a quoted field may span
    lines). A row the ``csv`` module cannot parse (e.g. a field over its size limit) raises ``make_error``'s
    error for its first line (or the ``csv.Error`` itself without ``make_error``)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    reader = csv.reader(lines, delimiter=delimiter)
    first = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if make_error is None:
                raise
            raise make_error(f"unreadable CSV: {exc}", first) from None
        last = reader.line_num
        if row:
            yield first, last, row
        first = last + 1
