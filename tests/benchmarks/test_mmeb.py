"""MMEB loader: parquet layout, VLM2Vec's candidate lists and image-token handling, malformed rows."""

from __future__ import annotations

import logging

import datasets
import pyarrow as pa
import pytest
from benchmark_fixtures import IMAGE_TOKEN, write_mmeb, write_mmeb_parquet

from gcl_hf.benchmarks.errors import BenchmarkFormatError, BenchmarkNotFoundError
from gcl_hf.benchmarks.mmeb import MMEB_RETRIEVAL_SUBSETS, load_mmeb
from gcl_hf.benchmarks.registry import load_benchmark

SUBSETS = ("MSCOCO_i2t", "MSCOCO_t2i", "CIRR", "WebQA")


@pytest.fixture
def mmeb(tmp_path):
    return write_mmeb(tmp_path / "MMEB-eval")


def _dedup(items):
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def test_retrieval_subsets_constant():
    assert len(MMEB_RETRIEVAL_SUBSETS) == 12 and len(set(MMEB_RETRIEVAL_SUBSETS)) == 12
    assert {"MSCOCO_i2t", "VisualNews_i2t", "VisDial", "MSCOCO_t2i", "VisualNews_t2i", "WebQA", "EDIS",
            "Wiki-SS-NQ", "CIRR", "NIGHTS", "OVEN", "FashionIQ"} == set(MMEB_RETRIEVAL_SUBSETS)


def test_subsets_load_with_per_query_candidates(mmeb):
    tasks = {t.name: t for t in load_benchmark("mmeb", mmeb["root"], subsets=SUBSETS, strip_image_token=True)}
    assert list(tasks) == [f"mmeb_{s}" for s in SUBSETS]
    expected_modalities = {
        "MSCOCO_i2t": ("image,text", "text"),
        "MSCOCO_t2i": ("text", "image"),
        "CIRR": ("image,text", "image"),
        "WebQA": ("text", "image,text"),
    }
    for subset in SUBSETS:
        task = tasks[f"mmeb_{subset}"]
        rows = mmeb["subsets"][subset]["rows"]
        assert isinstance(task.queries, datasets.Dataset) and task.corpus.column_names == ["id", "text", "image", "modality"]
        assert task.metric == "precision_at_1" and task.k == (1,) and task.headline_k == 1
        assert task.image_root == str(mmeb["image_root"])
        q_mod, c_mod = expected_modalities[subset]
        assert set(task.queries["modality"]) == {q_mod} and set(task.corpus["modality"]) == {c_mod}
        corpus = {row["id"]: row for row in task.corpus}
        # The corpus is the union of distinct (text, image) target pairs.
        pairs = _dedup([(t, i) for row in rows for t, i in zip(row["tgt_text"], row["tgt_img_path"])])
        assert len(task.corpus) == len(pairs) == len(set(task.corpus["id"]))
        assert len(task.queries) == len(rows) == len(task.candidates) == len(task.qrels)
        for query, row in zip(task.queries, rows):
            ids = task.candidates[query["id"]]
            raw = _dedup(list(zip(row["tgt_text"], row["tgt_img_path"])))
            assert len(ids) == len(raw)
            for cid, (text, image) in zip(ids, raw):
                stripped = text.replace(IMAGE_TOKEN, "").strip()
                assert corpus[cid]["text"] == (stripped or None) and corpus[cid]["image"] == (image or None)
            assert task.qrels[query["id"]] == {ids[0]}  # the positive is the first candidate
            assert query["image"] == (row["qry_img_path"] or None)
            assert IMAGE_TOKEN not in (query["text"] or "")
            assert query["text"] == row["qry_text"].replace(IMAGE_TOKEN, "").strip()
    # A candidate repeated in one row is one candidate; shared candidates across rows share an id.
    coco = tasks["mmeb_MSCOCO_i2t"]
    assert len(coco.candidates["q2"]) == 3 and coco.candidates["q0"][3] == coco.candidates["q1"][3]


def test_image_root_and_image_token_options(mmeb, tmp_path):
    kept = load_mmeb(mmeb["root"], subsets=["MSCOCO_i2t"])[0]  # VLM2Vec's CLIP baseline keeps the token
    assert kept.queries[0]["text"].startswith(IMAGE_TOKEN) and kept.queries[0]["modality"] == "image,text"
    stripped = load_mmeb(mmeb["root"], subsets=["MSCOCO_i2t"], strip_image_token=True)[0]
    assert IMAGE_TOKEN not in (stripped.queries[0]["text"] or "")
    moved = tmp_path / "images_elsewhere"
    mmeb["image_root"].rename(moved)
    with pytest.raises(BenchmarkFormatError, match="image file not found"):
        load_mmeb(mmeb["root"], subsets=["CIRR"])
    task = load_mmeb(mmeb["root"], subsets=["CIRR"], image_root=moved)[0]
    assert task.image_root == str(moved) and (moved / task.corpus[0]["image"]).is_file()


def test_missing_subsets_and_hub_offline(mmeb, tmp_path, monkeypatch):
    with pytest.raises(BenchmarkNotFoundError, match="VisDial"):
        load_mmeb(mmeb["root"])  # the 12 retrieval subsets by default; only 4 are here
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(BenchmarkNotFoundError) as info:
        load_benchmark("mmeb", "TIGER-Lab/MMEB-eval", subsets=["CIRR"])
    assert "TIGER-Lab/MMEB-eval" in str(info.value) and "offline" in str(info.value)


def test_empty_target_text_string_means_image_targets(tmp_path):
    # VLM2Vec's eval: tgt_text == "" stands for one empty text per target image.
    from benchmark_fixtures import write_png

    schema = pa.schema([("qry_text", pa.string()), ("qry_img_path", pa.string()),
                        ("tgt_text", pa.string()), ("tgt_img_path", pa.list_(pa.string()))])
    for n in range(3):
        write_png(tmp_path / "eval_images" / f"NIGHTS/{n}.png", n)
    rows = [{"qry_text": f"{IMAGE_TOKEN}\nFind a day-to-day image that looks similar to the provided image.",
             "qry_img_path": "NIGHTS/0.png", "tgt_text": "", "tgt_img_path": ["NIGHTS/1.png", "NIGHTS/2.png"]}]
    write_mmeb_parquet(tmp_path / "NIGHTS" / "test-00000-of-00001.parquet", rows, schema)
    task = load_mmeb(tmp_path, subsets=["NIGHTS"])[0]
    assert task.corpus["modality"] == ["image", "image"] and task.corpus["text"] == [None, None]
    assert task.queries[0]["modality"] == "image,text"


def _bad_cases(info):
    i2t, t2i, cirr = (info["subsets"][s] for s in ("MSCOCO_i2t", "MSCOCO_t2i", "CIRR"))

    def rewrite(entry, row_index, **changes):
        entry["rows"][row_index] = {**entry["rows"][row_index], **changes}  # later edits keep earlier ones
        write_mmeb_parquet(entry["file"], entry["rows"])
        return entry["file"]

    def length_mismatch():
        return rewrite(i2t, 1, tgt_img_path=["", ""]), 1, "tgt_img_path", "4 target texts but 2 target image paths"

    def missing_query_image():
        (info["image_root"] / cirr["rows"][2]["qry_img_path"]).unlink()
        return cirr["file"], 2, "qry_img_path", "image file not found"

    def missing_target_image():
        (info["image_root"] / t2i["rows"][0]["tgt_img_path"][1]).unlink()
        return t2i["file"], 0, "tgt_img_path[1]", "image file not found"

    def token_without_image():
        return rewrite(cirr, 0, qry_img_path=""), 0, "qry_img_path", f"has {IMAGE_TOKEN} but qry_img_path is empty"

    def empty_candidate():
        return rewrite(i2t, 2, tgt_text=["ok", "", "x", "y"]), 2, "tgt_text[1]", "empty candidate"

    def empty_target_list():
        return rewrite(t2i, 1, tgt_text=[], tgt_img_path=[]), 1, "tgt_img_path", "non-empty list"

    return [length_mismatch, missing_query_image, missing_target_image, token_without_image, empty_candidate,
            empty_target_list]


@pytest.mark.parametrize("case", range(6))
def test_malformed_rows_name_file_row_and_field(mmeb, case):
    file, row, field, reason = _bad_cases(mmeb)[case]()
    with pytest.raises(BenchmarkFormatError) as info:
        load_mmeb(mmeb["root"], subsets=SUBSETS)
    err = info.value
    assert (err.file, err.row, err.field) == (str(file), row, field)
    assert str(file) in str(err) and f"row {row}" in str(err) and repr(field) in str(err) and reason in str(err)


def test_missing_column_is_named(mmeb):
    entry = mmeb["subsets"]["CIRR"]
    schema = pa.schema([("qry_text", pa.string()), ("qry_img_path", pa.string()), ("tgt_text", pa.list_(pa.string()))])
    write_mmeb_parquet(entry["file"], [{k: r[k] for k in schema.names} for r in entry["rows"]], schema)
    with pytest.raises(BenchmarkFormatError) as info:
        load_mmeb(mmeb["root"], subsets=["CIRR"])
    assert info.value.field == "tgt_img_path" and info.value.file == str(entry["file"])


def test_errors_skip_counts_rows(mmeb, caplog):
    for case in _bad_cases(mmeb):
        case()
    with caplog.at_level(logging.WARNING, logger="gcl_hf.benchmarks"):
        tasks = {t.meta["subset"]: t for t in load_mmeb(mmeb["root"], subsets=SUBSETS, errors="skip")}
    assert tasks["MSCOCO_i2t"].meta["skipped"] == 2 and len(tasks["MSCOCO_i2t"].queries) == 1
    assert tasks["MSCOCO_t2i"].meta["skipped"] == 2 and len(tasks["MSCOCO_t2i"].queries) == 1
    assert tasks["CIRR"].meta["skipped"] == 2 and tasks["CIRR"].queries["id"] == ["q1"]  # ids are row numbers
    assert tasks["WebQA"].meta["skipped"] == 0 and len(tasks["WebQA"].queries) == 3
    # Candidates of skipped rows never enter the corpus; kept rows keep complete candidate lists.
    for task in tasks.values():
        used = {cid for ids in task.candidates.values() for cid in ids}
        assert used == set(task.corpus["id"])
    assert any("mmeb_CIRR: skipped 2" in r.getMessage() for r in caplog.records)
