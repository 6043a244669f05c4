"""One record-error model: every input-error family is a RecordError, survives pickling, and one SkipReport."""

import logging
import pickle

import pytest

from gcl_hf.benchmarks.errors import BenchmarkFormatError
from gcl_hf.data.errors import DataFormatError, LoadReport
from gcl_hf.data.images import ImageLoadError
from gcl_hf.errors import RecordError, SkipReport
from gcl_hf.retrieval.encoding import EncodingError

ERRORS = [
    BenchmarkFormatError("unknown modality 'video'", file="q.jsonl", line=7, field="query_modality"),
    DataFormatError("lcs.json: record 3", "conversations", "expected a list of turns"),
    ImageLoadError("file not found", row=3, column="image", path="/d/x.png"),
    EncodingError("a 'text' item needs a text", row="row 2 (id 'c2')", field="text"),
]


@pytest.mark.parametrize("err", ERRORS, ids=lambda e: type(e).__name__)
def test_every_family_is_a_record_error_with_location_field_reason(err):
    assert isinstance(err, RecordError) and isinstance(err, ValueError)
    assert err.location and err.field and err.reason in str(err) and err.location in str(err)
    again = pickle.loads(pickle.dumps(err))  # dataloader workers send errors across processes
    assert type(again) is type(err) and str(again) == str(err) and again.details() == err.details()


def test_message_names_file_line_and_field():
    err = ERRORS[0]
    assert str(err) == "q.jsonl, line 7, field 'query_modality': unknown modality 'video'"
    assert (err.file, err.line, err.field) == ("q.jsonl", 7, "query_modality")


def test_byte_offset_of_undecodable_bytes_is_kept_across_processes():
    err = DataFormatError("x.jsonl: line 2", None, "not valid UTF-8: byte 0xe9 at byte offset 57", offset=57)
    again = pickle.loads(pickle.dumps(err))
    assert again.offset == 57 and again.details()["offset"] == 57 and str(again) == str(err)


def test_skip_report_raises_or_counts_and_merges(caplog):
    with pytest.raises(BenchmarkFormatError):
        SkipReport("raise").handle(ERRORS[0])
    report = SkipReport("skip", source="q.jsonl")
    for err in ERRORS:
        report.handle(err, index=1)
    other = LoadReport("lcs.json", "llava", num_records=10, errors="skip")
    other.handle(ERRORS[1], index=3)
    report.merge(other.to_dict())
    assert report.count == 5 and report.num_records == 10 and report.by_field["conversations"] == 2
    assert report.skipped[-1].index == 3 and "expected a list of turns" in report.examples[-1]
    with caplog.at_level(logging.WARNING):
        report.log(logging.getLogger("test"), "task x")
    assert "task x: skipped 5 of 10 malformed record(s)" in caplog.text
    with pytest.raises(ValueError, match="errors must be one of"):
        SkipReport("ignore")


def test_one_errors_vocabulary_and_one_parser():
    from typing import get_args

    from gcl_hf.errors import ERRORS_MODES, ErrorMode, check_errors_mode

    assert get_args(ErrorMode) == ERRORS_MODES == ("raise", "skip")
    assert [check_errors_mode(mode) for mode in ERRORS_MODES] == list(ERRORS_MODES)
    with pytest.raises(ValueError, match=r"^image_errors must be one of \('raise', 'skip'\), got 'ignore'$"):
        check_errors_mode("ignore", "image_errors")
