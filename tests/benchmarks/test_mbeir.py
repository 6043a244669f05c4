"""M-BEIR loader: real layout, UniIR semantics, every malformed-input case, skip counting, Hub errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets
import pytest
from benchmark_fixtures import write_mbeir, write_png

from gcl_hf.benchmarks.errors import BenchmarkFormatError, BenchmarkNotFoundError
from gcl_hf.benchmarks.images import load_image, load_task_image
from gcl_hf.benchmarks.mbeir import discover_mbeir_tasks, format_string, load_mbeir
from gcl_hf.benchmarks.registry import load_benchmark


@pytest.fixture
def mbeir(tmp_path):
    return write_mbeir(tmp_path / "M-BEIR")


def _load(info, tmp_path, **options):
    options.setdefault("cache_dir", tmp_path / "cache")
    return {t.meta["dataset"] + "_task" + str(t.meta["task_id"]): t for t in load_mbeir(info["root"], **options)}


def _edit_line(path: Path, index: int, edit) -> None:
    """Replace the JSON object on 0-based line ``index`` of a JSONL file by ``edit(object)``."""
    lines = path.read_text().splitlines()
    lines[index] = json.dumps(edit(json.loads(lines[index])))
    path.write_text("\n".join(lines) + "\n")


def _append_line(path: Path, text: str) -> None:
    with open(path, "a") as handle:
        handle.write(text + "\n")


def test_format_string_matches_uniir():
    assert format_string('  "a cat on a mat"\r ') == "A cat on a mat."
    assert format_string("what is this?") == "What is this?"
    assert format_string("") == "" and format_string(None) == ""


def test_local_pools_load_every_task_with_uniir_semantics(mbeir, tmp_path):
    tasks = load_mbeir(mbeir["root"], cache_dir=tmp_path / "cache")
    # UniIR's report order: by task id, then its dataset order.
    assert [t.name for t in tasks] == [
        "mbeir_mscoco_task0", "mbeir_webqa_task2", "mbeir_mscoco_task3", "mbeir_fashioniq_task7", "mbeir_cirr_task7",
    ]
    for task in tasks:
        expected = mbeir["tasks"][task.name.removeprefix("mbeir_")]
        assert isinstance(task.queries, datasets.Dataset) and isinstance(task.corpus, datasets.Dataset)
        assert task.queries.column_names == ["id", "text", "image", "modality"] == task.corpus.column_names
        assert task.queries["id"] == expected["qids"]
        assert task.corpus["id"] == expected["dids"]
        assert task.qrels == expected["qrels"]
        assert set(task.queries["modality"]) == {expected["query_modality"]}
        assert set(task.corpus["modality"]) == {expected["candidate_modality"]}
        assert task.meta["pool"] == "local" and task.meta["skipped"] == 0
        assert task.meta["qrels_not_in_corpus"] == 0 and task.metric == "recall"
        assert task.image_root == str(mbeir["root"])
        for row in list(task.queries) + list(task.corpus):
            if "image" in row["modality"]:
                assert (Path(task.image_root) / row["image"]).is_file()
            else:
                assert row["image"] is None
            if "text" in row["modality"]:
                assert row["text"] == format_string(row["text"]) and row["text"].endswith(".")
    by_name = {t.name: t for t in tasks}
    # Recall@k as UniIR reports it: 1/5/10 (headline 5), 10/20/50 for the fashion datasets (headline 10).
    assert by_name["mbeir_mscoco_task0"].k == (1, 5, 10) and by_name["mbeir_mscoco_task0"].headline_k == 5
    assert by_name["mbeir_fashioniq_task7"].k == (10, 20, 50) and by_name["mbeir_fashioniq_task7"].headline_k == 10
    # Two relevant candidates for the first mscoco_task3 query.
    assert by_name["mbeir_mscoco_task3"].qrels["9:301"] == {"9:301", "9:304"}
    # Pool file name variants: MSCOCO's carries the split, the others do not.
    assert by_name["mbeir_mscoco_task0"].meta["corpus_file"].endswith("mbeir_mscoco_task0_test_cand_pool.jsonl")
    assert by_name["mbeir_cirr_task7"].meta["corpus_file"].endswith("mbeir_cirr_task7_cand_pool.jsonl")


def test_datasets_filter_by_dataset_or_pair(mbeir, tmp_path):
    assert [t.name for t in load_mbeir(mbeir["root"], datasets=["MSCOCO"], cache_dir=tmp_path)] == [
        "mbeir_mscoco_task0", "mbeir_mscoco_task3"]
    assert [f.name for f in discover_mbeir_tasks(mbeir["root"], "test", ["cirr_task7", "webqa"])] == [
        "webqa_task2", "cirr_task7"]
    with pytest.raises(ValueError, match=r"oven_task6.*available"):
        load_mbeir(mbeir["root"], datasets=["oven_task6"], cache_dir=tmp_path)


def test_global_pool_is_one_shared_corpus(mbeir, tmp_path):
    tasks = load_mbeir(mbeir["root"], pool="global", cache_dir=tmp_path / "cache")
    union = [json.loads(line)["did"] for line in mbeir["global_pool"].read_text().splitlines()]
    assert all(t.corpus is tasks[0].corpus for t in tasks)
    assert tasks[0].corpus["id"] == union and len(union) == 20
    assert {t.name for t in tasks} == {f"mbeir_{n}_union" for n in mbeir["tasks"]}
    for task in tasks:
        assert task.meta["pool"] == "global" and task.meta["corpus_file"] == str(mbeir["global_pool"])
        assert task.meta["qrels_not_in_corpus"] == 0
        # UniIR searches the union pool whole: candidates of every modality are present.
        assert set(task.corpus["modality"]) == {"image", "text", "image,text"}
    # Loaded once: one cache entry (one Arrow file) for the union pool.
    entries = list((tmp_path / "cache").glob("mbeir_union_test_cand_pool-*"))
    assert len(entries) == 1 and len(list(entries[0].rglob("*.arrow"))) == 1


def test_instructions_prefix_queries_deterministically(mbeir, tmp_path):
    first = _load(mbeir, tmp_path, instructions="first")
    coco_t2i = first["mscoco_task0"].queries[0]
    assert coco_t2i["text"] == "Retrieve an image for this text query (a). query 0 for mscoco_task0."
    # An image query that gains an instruction text is embedded fused, as UniIR does.
    coco_i2t = first["mscoco_task3"].queries[0]
    assert coco_i2t["text"] == "Retrieve a text for this image query (a)." and coco_i2t["modality"] == "image,text"
    assert first["mscoco_task3"].meta["query_modality"] == "image"

    drawn = _load(mbeir, tmp_path, instructions=True)
    again = _load(mbeir, tmp_path, instructions="random")
    prompts = set()
    for name, task in drawn.items():
        assert task.queries["text"] == again[name].queries["text"]
        for text in task.queries["text"]:
            prompts.add(text.split("(")[1][0])
    assert prompts <= {"a", "b", "c"} and len(prompts) > 1  # random over prompt_1..3, never the empty prompt_4
    reseeded = _load(mbeir, tmp_path, instructions=True, instruction_seed=7)
    assert [t.queries["text"] for t in reseeded.values()] != [t.queries["text"] for t in drawn.values()]
    no_instructions = _load(mbeir, tmp_path)
    assert no_instructions["mscoco_task3"].queries[0]["text"] is None


def test_instruction_missing_for_a_task_names_the_query_line(mbeir, tmp_path):
    tsv = mbeir["instructions"]
    tsv.write_text("\n".join(line for line in tsv.read_text().splitlines() if "\tCIRR\t" not in line) + "\n")
    with pytest.raises(BenchmarkFormatError) as info:
        _load(mbeir, tmp_path, instructions=True)
    err = info.value
    assert err.file == str(mbeir["tasks"]["cirr_task7"]["queries_file"]) and err.line == 1 and err.field == "qid"
    assert "dataset_id 8" in str(err)


def test_format_text_false_keeps_raw_text(mbeir, tmp_path):
    task = _load(mbeir, tmp_path, format_text=False, datasets=["mscoco_task0"])["mscoco_task0"]
    assert task.queries[0]["text"] == "query 0 for mscoco_task0"


def _bad_cases(info):
    coco = info["tasks"]["mscoco_task0"]
    i2t = info["tasks"]["mscoco_task3"]
    cirr = info["tasks"]["cirr_task7"]

    def malformed_json():
        _append_line(coco["queries_file"], '{"qid": "9:9", "query_txt": ')
        return coco["queries_file"], 4, None, "malformed JSON"

    def missing_field():
        _edit_line(coco["queries_file"], 1, lambda row: {k: v for k, v in row.items() if k != "query_modality"})
        return coco["queries_file"], 2, "query_modality", "missing field"

    def unknown_modality():
        _edit_line(cirr["pool_file"], 2, lambda row: {**row, "modality": "video"})
        return cirr["pool_file"], 3, "modality", "unknown modality 'video'"

    def qid_without_qrels():
        lines = coco["qrels_file"].read_text().splitlines()
        coco["qrels_file"].write_text("\n".join(l for l in lines if not l.startswith("9:2 ")) + "\n")
        return coco["queries_file"], 2, "qid", "no relevant candidate"

    def missing_candidate_image():
        (info["root"] / "mbeir_images/mscoco_images/mscoco_task0/cand_0.png").unlink()
        return coco["pool_file"], 1, "img_path", "image file not found"

    def missing_query_image():
        (info["root"] / "mbeir_images/cirr_images/cirr_task7/query_2.png").unlink()
        return cirr["queries_file"], 3, "query_img_path", "image file not found"

    def malformed_qrels():
        with open(coco["qrels_file"], "a") as handle:
            handle.write("9:3 0 9:3\n")
        return coco["qrels_file"], 4, "qid 0 did relevance task_id", "expected 5 fields"

    def duplicate_did():
        row = json.loads(i2t["pool_file"].read_text().splitlines()[1])
        _append_line(i2t["pool_file"], json.dumps({**row, "txt": "again"}))
        return i2t["pool_file"], 5, "did", "duplicate did '9:302' (first at line 2)"

    def task_id_mismatch():
        _edit_line(coco["queries_file"], 2, lambda row: {**row, "task_id": 3})
        return coco["queries_file"], 3, "task_id", "does not match the file's task 0"

    def modality_mismatch():
        _edit_line(i2t["queries_file"], 0, lambda row: {**row, "query_modality": "text", "query_txt": "x"})
        return i2t["queries_file"], 1, "query_modality", "does not match task 3"

    def empty_query_text():
        _edit_line(coco["queries_file"], 0, lambda row: {**row, "query_txt": "  "})
        return coco["queries_file"], 1, "query_txt", "empty text"

    def malformed_did():
        _edit_line(coco["pool_file"], 0, lambda row: {**row, "did": "mscoco-1"})
        return coco["pool_file"], 1, "did", "malformed id"

    return [malformed_json, missing_field, unknown_modality, qid_without_qrels, missing_candidate_image,
            missing_query_image, malformed_qrels, duplicate_did, task_id_mismatch, modality_mismatch,
            empty_query_text, malformed_did]


@pytest.mark.parametrize("case", range(12))
def test_malformed_input_names_file_line_and_field(mbeir, tmp_path, case):
    file, line, field, reason = _bad_cases(mbeir)[case]()
    with pytest.raises(BenchmarkFormatError) as info:
        load_mbeir(mbeir["root"], cache_dir=tmp_path / "cache")
    err = info.value
    assert (err.file, err.line, err.field) == (str(file), line, field)
    message = str(err)
    assert str(file) in message and f"line {line}" in message and reason in message
    if field is not None:
        assert repr(field) in message


def test_errors_skip_counts_and_reports(mbeir, tmp_path, caplog):
    cases = _bad_cases(mbeir)
    for case in cases:
        case()
    # one good query keeps mscoco_task0 a task (one whose every query is skipped is an error: see test_io.py)
    coco_files = mbeir["tasks"]["mscoco_task0"]
    _append_line(coco_files["queries_file"], json.dumps({"qid": "9:5", "query_txt": "a fifth query", "task_id": 0,
                                                         "query_modality": "text", "pos_cand_list": ["9:2"]}))
    _append_line(coco_files["qrels_file"], "9:5 0 9:2 1 0")
    with caplog.at_level(logging.WARNING, logger="gcl_hf.benchmarks"):
        tasks = _load(mbeir, tmp_path, errors="skip")
    coco, i2t, cirr = tasks["mscoco_task0"], tasks["mscoco_task3"], tasks["cirr_task7"]
    # mscoco_task0 queries: empty text (line 1), missing field (2; its qrels are gone too), bad task id (3),
    # bad JSON (4); pool: line 1 (malformed did, image gone); qrels: the 4-field line.
    assert coco.meta["skipped"] == 6
    assert coco.queries["id"] == ["9:5"] and coco.qrels == {"9:5": {"9:2"}}
    assert coco.corpus["id"] == ["9:2", "9:3", "9:4"]
    # mscoco_task3: the modality-mismatched query and the duplicate did.
    assert i2t.meta["skipped"] == 2 and i2t.queries["id"] == ["9:302", "9:303"] and len(i2t.corpus) == 4
    assert i2t.corpus[1]["text"] == "Candidate 1 of mscoco_task3."  # the first occurrence is kept
    # cirr_task7: the unknown-modality candidate and the query whose image is gone.
    assert cirr.meta["skipped"] == 2 and cirr.queries["id"] == ["8:701", "8:702"] and len(cirr.corpus) == 3
    assert cirr.meta["queries_without_relevant_in_corpus"] == 0
    assert tasks["webqa_task2"].meta["skipped"] == 0
    report = coco.meta["skip_report"]
    assert report["count"] == 6 and "malformed JSON" in " ".join(s["reason"] for s in report["skipped"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("mbeir_mscoco_task0: skipped 6 malformed record(s)" in w for w in warnings)
    # A cached load reports the same skipped pool records.
    again = _load(mbeir, tmp_path, errors="skip")
    assert again["mscoco_task0"].meta["skipped"] == 6 and again["mscoco_task3"].meta["skipped"] == 2


def test_unreachable_relevant_candidates_are_counted(mbeir, tmp_path, caplog):
    coco = mbeir["tasks"]["mscoco_task0"]
    lines = coco["pool_file"].read_text().splitlines()
    coco["pool_file"].write_text("\n".join(lines[1:]) + "\n")  # drop 9:1, the only relevant candidate of query 9:1
    with caplog.at_level(logging.WARNING, logger="gcl_hf.benchmarks"):
        task = _load(mbeir, tmp_path, datasets=["mscoco_task0"])["mscoco_task0"]
    assert task.meta["qrels_not_in_corpus"] == 1 and task.meta["queries_without_relevant_in_corpus"] == 1
    assert any("have none of their relevant candidates" in r.getMessage() for r in caplog.records)


def test_pool_cache_is_reused_and_invalidated(mbeir, tmp_path):
    cache = tmp_path / "cache"
    first = _load(mbeir, tmp_path, datasets=["mscoco_task0"])["mscoco_task0"]
    files = sorted(cache.rglob("*.arrow"))
    assert len(files) == 1 and first.corpus.cache_files[0]["filename"] == str(files[0])
    mtime = files[0].stat().st_mtime_ns
    again = _load(mbeir, tmp_path, datasets=["mscoco_task0"])["mscoco_task0"]
    assert sorted(cache.rglob("*.arrow")) == files and files[0].stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert again.corpus["id"] == first.corpus["id"]
    pool = mbeir["tasks"]["mscoco_task0"]["pool_file"]
    _append_line(pool, json.dumps({**json.loads(pool.read_text().splitlines()[0]), "did": "9:99"}))
    changed = _load(mbeir, tmp_path, datasets=["mscoco_task0"])["mscoco_task0"]
    assert changed.corpus["id"][-1] == "9:99" and len(list(cache.rglob("*.arrow"))) == 2


def test_corrupt_images_fail_at_decode_with_file_row_and_field(mbeir, tmp_path):
    bad = mbeir["root"] / "mbeir_images/mscoco_images/mscoco_task0/cand_2.png"
    bad.write_bytes(b"definitely not a png")
    task = _load(mbeir, tmp_path, datasets=["mscoco_task0"])["mscoco_task0"]  # existence check passes
    assert load_task_image(task, "corpus", 0).size == (8, 8)
    assert load_task_image(task, "queries", 0) is None  # a text query
    with pytest.raises(BenchmarkFormatError) as info:
        load_task_image(task, "corpus", 2)
    err = info.value
    assert (err.file, err.row, err.field) == (task.meta["corpus_file"], 2, "image")
    assert "'9:3'" in str(err) and str(bad) in str(err) and "not a readable image" in str(err)
    # check_images="decode" finds it at load time, naming the pool line.
    with pytest.raises(BenchmarkFormatError) as info:
        _load(mbeir, tmp_path, datasets=["mscoco_task0"], check_images="decode")
    assert (info.value.file, info.value.line, info.value.field) == (task.meta["corpus_file"], 3, "img_path")
    with pytest.raises(BenchmarkFormatError, match="file not found"):
        load_image("nowhere.png", image_root=tmp_path, file="x.jsonl", line=1, field="img_path")
    write_png(tmp_path / "ok.png", 3)
    assert load_image("ok.png", image_root=tmp_path).mode == "RGB"


def test_check_images_false_skips_existence_checks(mbeir, tmp_path):
    (mbeir["root"] / "mbeir_images/cirr_images/cirr_task7/cand_1.png").unlink()
    task = _load(mbeir, tmp_path, datasets=["cirr"], check_images=False)["cirr_task7"]
    assert len(task.corpus) == 4


def test_load_benchmark_dispatches_by_name(mbeir, tmp_path):
    tasks = load_benchmark("M-BEIR", mbeir["root"], datasets=["cirr"], cache_dir=tmp_path)
    assert [t.name for t in tasks] == ["mbeir_cirr_task7"]
    with pytest.raises(ValueError, match="unknown benchmark 'beir'.*covr, mbeir, mmeb"):
        load_benchmark("beir", mbeir["root"])
    with pytest.raises(TypeError, match="subsets"):
        load_benchmark("mbeir", mbeir["root"], subsets=["x"])
    with pytest.raises(ValueError, match="pool must be"):
        load_benchmark("mbeir", mbeir["root"], pool="union")
    with pytest.raises(ValueError, match="errors must be"):
        load_benchmark("mbeir", mbeir["root"], errors="ignore", cache_dir=tmp_path)


def test_hub_offline_and_missing_paths_give_clear_errors(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(BenchmarkNotFoundError) as info:
        load_benchmark("mbeir", "TIGER-Lab/M-BEIR", revision="main")
    message = str(info.value)
    assert "TIGER-Lab/M-BEIR" in message and "offline" in message and "local copy" in message
    with pytest.raises(BenchmarkNotFoundError, match="no such directory"):
        load_mbeir(str(tmp_path / "missing" / "dir"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchmarkNotFoundError, match="no query files"):
        load_mbeir(tmp_path / "empty")


def test_embedded_modality_follows_what_is_present(mbeir, tmp_path):
    # UniIR embeds an image whenever a path is set and a text whenever it is non-empty.
    pool = mbeir["tasks"]["mscoco_task3"]["pool_file"]
    _edit_line(pool, 0, lambda row: {**row, "img_path": "mbeir_images/mscoco_images/mscoco_task3/query_0.png"})
    task = _load(mbeir, tmp_path, datasets=["mscoco_task3"])["mscoco_task3"]
    assert task.corpus[0]["modality"] == "image,text" and task.corpus[1]["modality"] == "text"
    _edit_line(pool, 0, lambda row: {**row, "img_path": "mbeir_images/nowhere.png"})
    with pytest.raises(BenchmarkFormatError, match="image file not found"):
        _load(mbeir, tmp_path, datasets=["mscoco_task3"])


def test_instruction_key_uses_the_positive_candidates_modality_as_uniir_does(mbeir, tmp_path):
    # UniIR keys the prompt on (dataset id, query modality, modality of the query's positive candidate), not on the
    # task's nominal candidate modality: make WebQA's candidate 1 a text-only passage and give that key its own prompt.
    pool = mbeir["tasks"]["webqa_task2"]["pool_file"]
    _edit_line(pool, 1, lambda row: {**row, "img_path": None, "modality": "text"})
    with open(mbeir["instructions"], "a") as handle:
        handle.write("\t".join(["text", "text", "WebQA", "2", "find the passage (x)", "", "", ""]) + "\n")
    webqa = _load(mbeir, tmp_path, datasets=["webqa_task2"], instructions="first")["webqa_task2"]
    texts = webqa.queries["text"]
    assert texts[1].startswith("Find the passage (x).")  # query 1's positive is candidate 1
    assert texts[0].startswith("Retrieve an image with text for this text query (a).")  # the nominal key
    assert texts[2].startswith("Retrieve an image with text for this text query (a).")
