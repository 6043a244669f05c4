"""Every benchmark file a user hands over, hostile: byte-order marks, bytes that are not UTF-8, cut-off lines,
empty files and pools, wrong parquet types, zero-byte images. Each is an error naming the file at fault (line,
field), or a counted skip under ``errors="skip"`` -- never a task with an empty corpus or a silently wrong metric."""

from __future__ import annotations

import pyarrow as pa
import pytest
from benchmark_fixtures import MMEB_SCHEMA, write_covr, write_covr_csv, write_mbeir, write_mmeb, write_mmeb_parquet

from gcl_hf.benchmarks import load_covr, load_mbeir, load_mmeb
from gcl_hf.benchmarks.errors import BenchmarkFormatError

BOM = b"\xef\xbb\xbf"
TASK = "mscoco_task0"


@pytest.fixture
def mbeir(tmp_path):
    info = write_mbeir(tmp_path / "M-BEIR", tasks=(TASK,))
    info["files"] = info["tasks"][TASK]
    return info


def _load(info, tmp_path, **options):
    (task,) = load_mbeir(info["root"], cache_dir=tmp_path / "cache", **options)
    return task


def _append(path, data: bytes) -> int:
    """Append ``data``; the byte offset where it starts."""
    start = path.stat().st_size
    with open(path, "ab") as handle:
        handle.write(data)
    return start


# --------------------------------------------------------------------------------------------- M-BEIR


@pytest.mark.parametrize("which", ["qrels_file", "queries_file", "pool_file", "instructions"])
def test_mbeir_files_with_a_utf8_bom(mbeir, tmp_path, which):
    path = mbeir["instructions"] if which == "instructions" else mbeir["files"][which]
    path.write_bytes(BOM + path.read_bytes())
    task = _load(mbeir, tmp_path, instructions=True)
    assert task.qrels == mbeir["files"]["qrels"] and task.queries["id"] == mbeir["files"]["qids"]
    assert task.corpus["id"] == mbeir["files"]["dids"] and task.meta["skipped"] == 0


def test_mbeir_qrels_not_utf8_names_qrels_line_and_offset(mbeir, tmp_path):
    qrels = mbeir["files"]["qrels_file"]
    start = _append(qrels, b"9:3\xff 0 9:3 1 0\n")
    with pytest.raises(BenchmarkFormatError, match=rf"_qrels\.txt, line 4: not valid UTF-8: byte 0xff at byte "
                                                   rf"offset {start + 3}"):
        _load(mbeir, tmp_path)
    task = _load(mbeir, tmp_path, errors="skip")
    assert task.meta["skipped"] == 1 and task.qrels == mbeir["files"]["qrels"]


def test_mbeir_qrels_mismatch_is_blamed_on_the_qrels_file(mbeir, tmp_path):
    qrels = mbeir["files"]["qrels_file"]
    qrels.write_text(qrels.read_text().replace("9:1 0", "q1 0"))  # a qid the queries cannot match
    with pytest.raises(BenchmarkFormatError, match=r"_qrels\.txt, line 1, field 'qid': malformed id 'q1'"):
        _load(mbeir, tmp_path)


def test_mbeir_qrels_without_judgements_is_an_error(mbeir, tmp_path):
    mbeir["files"]["qrels_file"].write_text("")
    for errors in ("raise", "skip"):  # not three queries "without relevant candidates", and not zero queries
        with pytest.raises(BenchmarkFormatError, match=r"_qrels\.txt: no relevance judgement"):
            _load(mbeir, tmp_path, errors=errors)


def test_mbeir_instructions_not_utf8(mbeir, tmp_path):
    start = _append(mbeir["instructions"], b"text\timage\tX\t9\tfind \xe9\n")
    with pytest.raises(BenchmarkFormatError, match=rf"query_instructions\.tsv, line 3: not valid UTF-8: .*offset "
                                                   rf"{start + 20}"):
        _load(mbeir, tmp_path, instructions=True)
    assert _load(mbeir, tmp_path, instructions=True, errors="skip").meta["skipped"] == 1


def test_mbeir_pool_not_utf8_and_cut_off_last_line(mbeir, tmp_path):
    pool = mbeir["files"]["pool_file"]
    start = _append(pool, b'{"did": "9:9", "txt": "caf\xe9", "modality": "text"}\n{"did": "9:10", "tx')
    with pytest.raises(BenchmarkFormatError, match=rf"cand_pool\.jsonl, line 5: not valid UTF-8: byte 0xe9 at byte "
                                                   rf"offset {start + 26}"):
        _load(mbeir, tmp_path)
    task = _load(mbeir, tmp_path, errors="skip")
    assert task.meta["skipped"] == 2 and task.corpus["id"] == mbeir["files"]["dids"]
    reasons = [s["reason"] for s in task.meta["skip_report"]["skipped"]]
    assert "no newline at the end: the file looks truncated" in reasons[1]


@pytest.mark.parametrize("errors", ["raise", "skip"])
def test_mbeir_empty_pool_is_an_error_naming_it(mbeir, tmp_path, errors):
    mbeir["files"]["pool_file"].write_bytes(b"")
    with pytest.raises(BenchmarkFormatError, match=r"cand_pool\.jsonl: no candidates"):
        _load(mbeir, tmp_path, errors=errors)


def test_mbeir_pool_whose_every_line_is_skipped_is_an_error(mbeir, tmp_path):
    mbeir["files"]["pool_file"].write_text('{"did": "9:1"}\n{"did": "9:2", "modality": "video"}\n')
    with pytest.raises(BenchmarkFormatError, match=r"cand_pool\.jsonl: all 2 candidates were skipped \(errors='skip'\)"
                                                   r"; the first: .*line 1: field 'modality'"):
        _load(mbeir, tmp_path, errors="skip")


def test_mbeir_query_file_whose_every_line_is_skipped_is_an_error(mbeir, tmp_path):
    path = mbeir["files"]["queries_file"]
    path.write_bytes(path.read_bytes().replace(b'"query_modality": "text"', b'"query_modality": "audio"'))
    with pytest.raises(BenchmarkFormatError, match=r"test\.jsonl: all 3 queries were skipped"):
        _load(mbeir, tmp_path, errors="skip")


def test_mbeir_nul_in_text_is_a_record_error(mbeir, tmp_path):
    path = mbeir["files"]["queries_file"]
    path.write_bytes(path.read_bytes().replace(b"query 1 for", b"query\\u0000 1 for"))
    with pytest.raises(BenchmarkFormatError, match=r"test\.jsonl, line 2, field 'query_txt': .*NUL character"):
        _load(mbeir, tmp_path)


def test_zero_byte_image_fails_the_existence_check(mbeir, tmp_path):
    image = mbeir["root"] / "mbeir_images/mscoco_images/mscoco_task0/cand_2.png"
    image.write_bytes(b"")
    with pytest.raises(BenchmarkFormatError, match=r"cand_pool\.jsonl, line 3, field 'img_path': empty image file "
                                                   r"\(0 bytes\)"):
        _load(mbeir, tmp_path)


# --------------------------------------------------------------------------------------------- MMEB


def test_mmeb_parquet_with_wrong_column_types_names_the_column(tmp_path):
    info = write_mmeb(tmp_path / "MMEB", subsets=("MSCOCO_t2i",))
    entry = info["subsets"]["MSCOCO_t2i"]
    schema = pa.schema([("qry_text", pa.int64()), *[f for f in MMEB_SCHEMA if f.name != "qry_text"]])
    write_mmeb_parquet(entry["file"], [{**r, "qry_text": n} for n, r in enumerate(entry["rows"])], schema)
    for errors in ("raise", "skip"):  # a column of the wrong type is the file's fault, not each row's
        with pytest.raises(BenchmarkFormatError, match=r"test-00000-of-00001\.parquet, field 'qry_text': column of "
                                                       r"int64, expected strings"):
            load_mmeb(info["root"], subsets=["MSCOCO_t2i"], errors=errors)


def test_mmeb_subset_without_rows_is_an_error(tmp_path):
    info = write_mmeb(tmp_path / "MMEB", subsets=("MSCOCO_t2i",))
    write_mmeb_parquet(info["subsets"]["MSCOCO_t2i"]["file"], [])
    with pytest.raises(BenchmarkFormatError, match=r"test-00000-of-00001\.parquet: no rows"):
        load_mmeb(info["root"], subsets=["MSCOCO_t2i"])


# --------------------------------------------------------------------------------------------- CoVR


def test_covr_csv_with_bom(tmp_path):
    info = write_covr(tmp_path / "CoVR")
    info["csv"].write_bytes(BOM + info["csv"].read_bytes())
    (task,) = load_covr(info["root"])
    assert len(task.queries) == 5 and task.meta["skipped"] == 0


def test_covr_row_not_utf8_is_skippable(tmp_path):
    info = write_covr(tmp_path / "CoVR")
    start = _append(info["csv"], b"0001/1001,0001/1002,caf\xe9,a,b,[]\n")
    with pytest.raises(BenchmarkFormatError, match=rf"covr_test\.csv, line 7: not valid UTF-8: byte 0xe9 at byte "
                                                   rf"offset {start + 23}"):
        load_covr(info["root"])
    (task,) = load_covr(info["root"], errors="skip")
    assert len(task.queries) == 5 and task.meta["skipped"] == 1


@pytest.mark.parametrize("errors", ["raise", "skip"])
def test_covr_csv_without_rows_is_an_error(tmp_path, errors):
    info = write_covr(tmp_path / "CoVR")
    info["csv"].write_text(info["csv"].read_text().splitlines()[0] + "\n")
    with pytest.raises(BenchmarkFormatError, match=r"covr_test\.csv: no rows"):
        load_covr(info["root"], errors=errors)


@pytest.mark.parametrize("scores,reason", [("[1e999, 0.2]", "expected a list of finite numbers"),
                                           ("-" * 5000 + "1", "cannot parse"), ("-" * 50000 + "1", "cannot parse")])
def test_covr_scores_that_would_give_nan_weights_or_crash_the_parser(tmp_path, scores, reason):
    info = write_covr(tmp_path / "CoVR")
    rows = [dict(r) for r in info["rows"]]
    rows[4]["scores"] = scores
    write_covr_csv(info["csv"], rows)
    with pytest.raises(BenchmarkFormatError, match=rf"covr_test\.csv, line 6, row 4, field 'scores': {reason}"):
        load_covr(info["root"], target="scores")


def test_mmeb_and_covr_texts_with_nul_are_record_errors(tmp_path):
    info = write_mmeb(tmp_path / "MMEB", subsets=("MSCOCO_t2i",))
    entry = info["subsets"]["MSCOCO_t2i"]
    entry["rows"][1]["qry_text"] = "caption\x00 1"
    write_mmeb_parquet(entry["file"], entry["rows"])
    with pytest.raises(BenchmarkFormatError, match=r"row 1, field 'qry_text': contains a NUL character"):
        load_mmeb(info["root"], subsets=["MSCOCO_t2i"])
    covr = write_covr(tmp_path / "CoVR")
    rows = [dict(r) for r in covr["rows"]]
    rows[2]["edit"] = "make it \x00 red"
    write_covr_csv(covr["csv"], rows)
    with pytest.raises(BenchmarkFormatError, match=r"line 4, row 2, field 'edit': contains a NUL character"):
        load_covr(covr["root"])


def test_mmeb_unreadable_parquet_names_the_file(tmp_path):
    info = write_mmeb(tmp_path / "MMEB", subsets=("MSCOCO_t2i",))
    info["subsets"]["MSCOCO_t2i"]["file"].write_bytes(b"PAR1 cut short")
    with pytest.raises(BenchmarkFormatError, match=r"test-00000-of-00001\.parquet: not a readable parquet file"):
        load_mmeb(info["root"], subsets=["MSCOCO_t2i"])
