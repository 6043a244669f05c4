"""The training-data readers on hostile files: format detection, byte-order marks, bytes that are not UTF-8, broken
lines, Unicode line breaks inside captions, missing columns, empty results."""

from __future__ import annotations

import json

import datasets
import pytest

from gcl_hf.data import DataFormatError, load_image_text_pairs
from gcl_hf.data.images import ImageLoadError

BOM = b"\xef\xbb\xbf"


def _llava(i: int, caption: str = "a caption") -> dict:
    turns = [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": f"{caption} {i}"}]
    return {"id": str(i), "image": f"{i}.png", "conversations": turns}


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _jsonl(records) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


# --------------------------------------------------------------------------------------- LLaVA detection


@pytest.mark.parametrize("name", ["lcs.json", "lcs.jsonl"])
def test_llava_detected_from_all_records_when_the_first_is_bad(tmp_path, name):
    records = [{"id": "0", "image": "0.png"}] + [_llava(i) for i in range(1, 5)]
    path = tmp_path / name
    path.write_text(json.dumps(records) if name.endswith(".json") else _jsonl(records).decode())
    with pytest.raises(DataFormatError, match=r"(record 0|line 1) \(id '0'\), field 'conversations': missing"):
        load_image_text_pairs(path)
    dataset, report = load_image_text_pairs(path, errors="skip", return_report=True)
    assert report.format == "llava" and dataset["text"] == [f"a caption {i}" for i in range(1, 5)]
    assert report.num_skipped == 1 and report.skipped[0].field == "conversations" and report.skipped[0].index == 0


def test_plain_captions_win_when_most_records_have_them(tmp_path):
    records = [_llava(0)] + [{"image": f"{i}.png", "text": f"plain {i}"} for i in range(1, 4)]
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(records))
    dataset, report = load_image_text_pairs(path, errors="skip", return_report=True)
    assert report.format == "json" and dataset["text"] == ["plain 1", "plain 2", "plain 3"]
    assert report.skipped[0].field == "text" and report.skipped[0].index == 0


# --------------------------------------------------------------------------------------- byte-order marks


@pytest.mark.parametrize("name,body", [
    ("pairs.csv", b"image,text\na.png,a cat\n"),
    ("pairs.tsv", b"image\ttext\na.png\ta cat\n"),
    ("pairs.jsonl", b'{"image": "a.png", "text": "a cat"}\n'),
    ("pairs.json", b'[{"image": "a.png", "text": "a cat"}]'),
])
def test_utf8_bom_is_dropped(tmp_path, name, body):
    dataset = load_image_text_pairs(_write(tmp_path / name, BOM + body))
    assert dataset["text"] == ["a cat"] and dataset["image"] == [str(tmp_path / "a.png")]


def test_utf8_bom_in_imagefolder_metadata(tmp_path):
    (tmp_path / "metadata.csv").write_bytes(BOM + b"file_name,text\nx.png,a dog\n")
    assert load_image_text_pairs(tmp_path)["text"] == ["a dog"]


# --------------------------------------------------------------------------------------- not UTF-8


def test_non_utf8_jsonl_line_names_file_line_and_byte_offset(tmp_path):
    good = b'{"image": "a.png", "text": "one"}\n'
    path = _write(tmp_path / "latin1.jsonl", good + b'{"image": "b.png", "text": "caf\xe9"}\n' + good)
    offset = len(good) + len(b'{"image": "b.png", "text": "caf')
    with pytest.raises(DataFormatError, match=rf"latin1\.jsonl: line 2: not valid UTF-8: byte 0xe9 at byte offset "
                                              rf"{offset}") as info:
        load_image_text_pairs(path)
    assert info.value.offset == offset
    dataset, report = load_image_text_pairs(path, errors="skip", return_report=True)
    assert dataset["text"] == ["one", "one"]
    assert report.num_records == 3 and report.num_skipped == 1 and report.skipped[0].location.endswith("line 2")


def test_non_utf8_csv_row_is_skippable(tmp_path):
    path = _write(tmp_path / "latin1.csv", b'image,text\na.png,one\nb.png,"caf\xe9,\nau lait"\nc.png,three\n')
    with pytest.raises(DataFormatError, match=r"latin1\.csv: line 3: not valid UTF-8: byte 0xe9 at byte offset 31"):
        load_image_text_pairs(path)
    dataset, report = load_image_text_pairs(path, errors="skip", return_report=True)
    assert dataset["text"] == ["one", "three"] and report.num_records == 3 and report.num_skipped == 1


def test_non_utf8_json_list_cannot_be_skipped_but_is_located(tmp_path):
    data = b'[\n{"image": "a.png", "text": "ok"},\n{"image": "b.png", "text": "\xff"}\n]'
    path, offset = _write(tmp_path / "list.json", data), data.index(b"\xff")
    for errors in ("raise", "skip"):
        with pytest.raises(DataFormatError, match=rf"list\.json: line 3: not valid UTF-8: byte 0xff at byte offset "
                                                  rf"{offset}.*a JSON list cannot skip"):
            load_image_text_pairs(path, errors=errors)


def test_utf16_file_is_refused_as_a_whole(tmp_path):
    path = tmp_path / "wide.jsonl"
    path.write_text('{"image": "a.png", "text": "x"}\n', encoding="utf-16")
    with pytest.raises(DataFormatError, match=r"wide\.jsonl: line 1: the file is UTF-16.*save it as UTF-8"):
        load_image_text_pairs(path, errors="skip")


# --------------------------------------------------------------------------------------- broken lines


def test_malformed_jsonl_line_is_skippable(tmp_path):
    path = _write(tmp_path / "broken.jsonl", b'{"image": "a.png", "text": "one"}\n{"image": "b.png", "text":\n'
                                             b'[1, 2]\n{"image": "c.png", "text": "four"}\n{"image": "d.png", "te')
    with pytest.raises(DataFormatError, match=r"broken\.jsonl: line 2: invalid JSON"):
        load_image_text_pairs(path)
    dataset, report = load_image_text_pairs(path, errors="skip", return_report=True)
    assert dataset["text"] == ["one", "four"] and report.num_records == 5
    assert [s.location.rsplit(" ", 1)[-1] for s in report.skipped] == ["2", "3", "5"]
    assert "expected a JSON object" in report.skipped[1].reason
    assert "no newline at the end: the file looks truncated" in report.skipped[2].reason


def test_unicode_line_separator_inside_a_caption_is_kept(tmp_path):
    caption = "first line\u2028second\u0085third\x1cfourth"
    path = _write(tmp_path / "u.jsonl", _jsonl([{"image": "a.png", "text": caption}, {"image": "b.png", "text": "b"}]))
    assert load_image_text_pairs(path)["text"] == [caption, "b"]


def test_nul_in_caption_is_a_record_error(tmp_path):
    records = [{"image": "a.png", "text": "a\x00b"}, {"image": "b.png", "text": "ok"}]
    path = _write(tmp_path / "nul.jsonl", _jsonl(records))
    with pytest.raises(DataFormatError, match=r"nul\.jsonl: line 1, field 'text': caption contains a NUL character"):
        load_image_text_pairs(path)
    assert load_image_text_pairs(path, errors="skip")["text"] == ["ok"]


# --------------------------------------------------------------------------------------- columns and emptiness


def test_csv_without_the_caption_column_names_the_header(tmp_path):
    path = _write(tmp_path / "cols.csv", b"image,caption\na.png,x\nb.png,y\n")
    for errors in ("raise", "skip"):  # a missing column is not a bad record: skipping would drop every row
        with pytest.raises(DataFormatError, match=r"cols\.csv: line 1, field 'text': column not found \(header: "
                                                  r"\['image', 'caption'\]\)"):
            load_image_text_pairs(path, errors=errors)
    assert load_image_text_pairs(path, caption_column="caption")["text"] == ["x", "y"]


@pytest.mark.parametrize("name,body", [("empty.jsonl", b""), ("blank.jsonl", b"\n\n"), ("empty.json", b"[]"),
                                       ("header.csv", b"image,text\n")])
def test_file_without_records_is_an_error(tmp_path, name, body):
    with pytest.raises(DataFormatError, match=rf"{name}: no records"):
        load_image_text_pairs(_write(tmp_path / name, body))


def test_every_record_skipped_is_an_error(tmp_path):
    path = _write(tmp_path / "all_bad.jsonl", _jsonl([{"image": "a.png", "text": " "}, {"image": "", "text": "x"}]))
    with pytest.raises(DataFormatError, match=r"all_bad\.jsonl: all 2 records were skipped .*empty caption"):
        load_image_text_pairs(path, errors="skip")


def test_parquet_image_column_of_numbers_is_named(tmp_path):
    path = tmp_path / "nums.parquet"
    datasets.Dataset.from_dict({"image": [1, 2], "text": ["a", "b"]}).to_parquet(str(path))
    with pytest.raises(DataFormatError, match=r"nums\.parquet, field 'image': images must be paths, bytes or "
                                              r"datasets\.Image, the column is Value\('int64'\)"):
        load_image_text_pairs(path)


def test_check_images_exists_refuses_zero_byte_files(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    path = _write(tmp_path / "pairs.jsonl", _jsonl([{"image": "a.png", "text": "x"}]))
    with pytest.raises(ImageLoadError, match=r"a\.png'\): empty file \(0 bytes\)"):
        load_image_text_pairs(path, check_images="exists")


def test_csv_field_over_the_csv_module_limit_names_the_line(tmp_path):
    path = _write(tmp_path / "huge.csv", b"image,text\na.png,ok\nb.png," + b"x" * 200_000 + b"\n")
    with pytest.raises(DataFormatError, match=r"huge\.csv: line 3: unreadable CSV: field larger than field limit"):
        load_image_text_pairs(path)


@pytest.mark.parametrize("body", [b"", b"PAR1 not really"])
def test_unreadable_parquet_names_the_file(tmp_path, body):
    with pytest.raises(DataFormatError, match=r"bad\.parquet: not a readable parquet file"):
        load_image_text_pairs(_write(tmp_path / "bad.parquet", body))


def test_csv_caption_with_an_unquoted_comma_is_an_error_not_its_first_part(tmp_path):
    """``x.png,a cat, sitting`` used to train on the caption "a cat"."""
    path = _write(tmp_path / "pairs.csv", b"image,text\na.png,a dog\nb.png,a cat, sitting on a mat\n")
    with pytest.raises(DataFormatError, match=r"pairs\.csv: line 3: 3 fields for the 2 columns of the header \(a field "
                                              r"with an unquoted comma"):
        load_image_text_pairs(path)
    kept = load_image_text_pairs(path, errors="skip")
    assert kept["text"] == ["a dog"]
