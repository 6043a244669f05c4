"""gcl_hf.data.textfiles: one UTF-8 reading of users' text files (byte-order mark, bad bytes, line breaks)."""

from __future__ import annotations

import pytest

from gcl_hf.data.textfiles import BOM, csv_rows, iter_lines, read_text, split_lines
from gcl_hf.errors import RecordError


def _error(reason: str, line: int, offset: int | None = None) -> RecordError:
    return RecordError(reason, source="f.txt", line=line, offset=offset)


def test_read_text_drops_the_bom_and_locates_bad_bytes(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(BOM + b"ok\nbad \xe9 here\r\nok \xe2\x80\xa8 too\n")
    decoded = read_text(path, _error)
    assert split_lines(decoded.text)[0] == "ok" and split_lines(decoded.text)[2] == "ok \u2028 too"
    assert list(decoded.bad_lines) == [2] and decoded.bad_lines[2].offset == 10
    assert str(decoded.bad_lines[2]) == ("f.txt, line 2: not valid UTF-8: byte 0xe9 at byte offset 10 "
                                         "(save the file as UTF-8)")


def test_iter_lines_streams_offsets_like_read_text(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(BOM + b"\xff\nab\ncd \xc3(\nlast")
    lines = list(iter_lines(path, _error))
    assert [(n, text) for n, text, _ in lines] == [(1, None), (2, "ab\n"), (3, None), (4, "last")]
    assert "byte 0xff at byte offset 3" in str(lines[0][2]) and "byte 0xc3 at byte offset 11" in str(lines[2][2])
    assert (lines[0][2].offset, lines[2][2].offset) == (3, 11)
    assert {n: str(e) for n, _, e in lines if e} == {n: str(e) for n, e in read_text(path, _error).bad_lines.items()}


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_wide_encodings_are_refused_as_a_whole(tmp_path, encoding):
    path = tmp_path / "f.txt"
    path.write_text("a,b\n", encoding=encoding)
    for read in (lambda: read_text(path, _error), lambda: list(iter_lines(path, _error))):
        with pytest.raises(RecordError, match=rf"line 1: the file is {encoding.upper()}"):
            read()


def test_csv_rows_span_quoted_newlines():
    rows = list(csv_rows('h1,h2\n\na,"two\nlines"\r\nb,c'))
    assert rows == [(1, 1, ["h1", "h2"]), (3, 4, ["a", "two\nlines"]), (5, 5, ["b", "c"])]
