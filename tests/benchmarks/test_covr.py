"""WebVid-CoVR loader: CSV layout, middle frames, CoVR's self-match removal, pooled targets, bad rows."""

from __future__ import annotations

import logging
import math
import shutil

import pytest
from benchmark_fixtures import COVR_COLUMNS, write_covr, write_covr_csv

from gcl_hf.benchmarks.covr import covr_sample_indices, load_covr, pre_caption
from gcl_hf.benchmarks.errors import BenchmarkFormatError, BenchmarkNotFoundError
from gcl_hf.benchmarks.registry import load_benchmark


@pytest.fixture
def covr(tmp_path):
    return write_covr(tmp_path / "WebVid-CoVR")


def test_pre_caption_matches_covr():
    assert pre_caption("Make it red!") == "make it red"
    assert pre_caption('Add "two" dogs (running); at night.') == "add two dogs running at night"
    assert pre_caption(" ".join(f"w{i}" for i in range(40))) == " ".join(f"w{i}" for i in range(30))


def test_sample_indices_follow_covr_frame_loader():
    # sample_frames(15, 30): interval midpoints 0, 2, ..., 28, then read at index - 1 (clamped at 0).
    assert covr_sample_indices(30) == [0] + list(range(1, 28, 2))
    assert len(covr_sample_indices(1000)) == 15 and covr_sample_indices(3) == [0, 0, 1]


def test_loads_queries_gallery_qrels_and_self_exclusion(covr):
    (task,) = load_benchmark("webvid-covr", covr["root"])
    rows = covr["rows"]
    assert task.name == "covr_test" and task.metric == "recall" and task.k == (1, 5, 10, 50) and task.headline_k == 1
    assert task.image_root == str(covr["frames_root"])
    assert task.queries["id"] == ["0", "1", "2", "3", "4"]
    assert task.queries["text"] == ["make it red", "make it blue", "make it bigger", "make it at night", "make it snowy"]
    assert set(task.queries["modality"]) == {"image,text"} and set(task.corpus["modality"]) == {"image"}
    # The query image is the source video's middle frame: the single frame file, or the middle of a frame directory.
    assert task.queries["image"][:4] == [f"{r['pth1']}.png" for r in rows[:4]]
    assert task.queries["image"][4] == "0002/2001/0002.png"
    # Gallery = all distinct targets (ids are pth2); each query's relevant item is its own target.
    assert task.corpus["id"] == [r["pth2"] for r in rows]
    assert task.corpus["image"][4] == "0002/2002/0002.png"
    assert task.qrels == {str(i): {r["pth2"]} for i, r in enumerate(rows)}
    # CoVR removes gallery items that are the query's own source video (pth2[j] == pth1[i]).
    assert task.exclude == {"1": {"0001/1002"}, "2": {"0001/1003"}, "3": {"0001/1004"}}
    for qid, excluded in task.exclude.items():
        assert not excluded & task.qrels[qid]
    assert load_covr(covr["root"], remove_self=False)[0].exclude is None
    assert load_covr(covr["root"], format_text=False)[0].queries["text"][0] == "Make it red!"


def test_scores_target_pooling(covr):
    (task,) = load_covr(covr["root"], target="scores")
    assert task.corpus.column_names == ["id", "text", "image", "modality", "frames", "frame_weights"]
    single = task.corpus[0]
    assert single["frames"] == [single["image"]] and single["frame_weights"] == [1.0]  # 15 scores, 1 frame: uniform
    pooled = task.corpus[4]
    assert pooled["frames"] == [f"0002/2002/{i:04d}.png" for i in range(5)]
    scores = [0.2 + 0.01 * i for i in range(5)]
    exps = [math.exp(s / 0.1) for s in scores]
    assert pooled["frame_weights"] == pytest.approx([e / sum(exps) for e in exps], rel=1e-5)


def test_annotation_locations_and_duplicate_targets(covr, tmp_path):
    nested = tmp_path / "nested"
    (nested / "annotation" / "webvid-covr").mkdir(parents=True)
    shutil.copy(covr["csv"], nested / "annotation" / "webvid-covr" / "webvid8m-covr_test.csv")
    task = load_covr(nested, frames_root=covr["frames_root"])[0]
    assert len(task.queries) == 5
    rows = covr["rows"] + [{**covr["rows"][0], "edit": "make it green"}]  # a second query for target 0001/1002
    write_covr_csv(tmp_path / "custom.csv", rows)
    task = load_covr(tmp_path, annotation="custom.csv", frames_root=covr["frames_root"])[0]
    assert task.name == "covr_custom" and len(task.queries) == 6 and len(task.corpus) == 5
    assert task.qrels["5"] == task.qrels["0"] == {"0001/1002"}
    with pytest.raises(BenchmarkNotFoundError, match="webvid8m-covr_val.csv"):
        load_covr(covr["root"], split="val")


def _bad_cases(info):
    rows = info["rows"]

    def write(index, **changes):
        rows[index] = {**rows[index], **changes}
        write_covr_csv(info["csv"], rows)

    def empty_edit():
        write(1, edit="  ")
        return 3, 1, "edit", "empty value"

    def missing_source_frame():
        (info["frames_root"] / "0001/1003.png").unlink()  # row 2's source (and row 1's target)
        return 3, 1, "pth2", "no frame for video '0001/1003'"

    def missing_target_frame():
        shutil.rmtree(info["frames_root"] / "0002/2002")
        return 6, 4, "pth2", "no frame for video '0002/2002'"

    def punctuation_only_edit():
        write(3, edit="!!!")
        return 5, 3, "edit", "empty after pre_caption"

    return [empty_edit, missing_source_frame, missing_target_frame, punctuation_only_edit]


@pytest.mark.parametrize("case", range(4))
def test_malformed_rows_name_file_line_and_field(covr, case):
    line, row, field, reason = _bad_cases(covr)[case]()
    with pytest.raises(BenchmarkFormatError) as info:
        load_covr(covr["root"])
    err = info.value
    assert (err.file, err.line, err.row, err.field) == (str(covr["csv"]), line, row, field)
    assert str(covr["csv"]) in str(err) and f"line {line}" in str(err) and repr(field) in str(err) and reason in str(err)


def test_missing_column_and_bad_scores(covr):
    write_covr_csv(covr["csv"], covr["rows"], [c for c in COVR_COLUMNS if c != "edit"])
    with pytest.raises(BenchmarkFormatError) as info:
        load_covr(covr["root"])
    assert (info.value.line, info.value.field) == (1, "edit")
    rows = [dict(r) for r in covr["rows"]]
    rows[2]["scores"] = "[0.1, oops]"
    write_covr_csv(covr["csv"], rows)
    assert len(load_covr(covr["root"])[0].corpus) == 5  # the middle-frame protocol never reads scores
    with pytest.raises(BenchmarkFormatError) as info:
        load_covr(covr["root"], target="scores")
    assert (info.value.line, info.value.field) == (4, "scores")


def test_errors_skip_and_check_images_false(covr, caplog):
    for case in _bad_cases(covr):
        case()
    with caplog.at_level(logging.WARNING, logger="gcl_hf.benchmarks"):
        (task,) = load_covr(covr["root"], errors="skip")
    # Row 1 (empty edit), row 1 again has a missing target frame but is skipped once; row 2 (missing
    # source frame), row 3 (edit empty after pre_caption), row 4 (missing target frames).
    assert task.meta["skipped"] == 4 and task.queries["id"] == ["0"]
    assert task.corpus["id"] == ["0001/1002"] and task.exclude == {}
    assert any("covr_test: skipped 4" in r.getMessage() for r in caplog.records)
    (loose,) = load_covr(covr["root"], check_images=False, errors="skip")
    assert loose.meta["skipped"] == 2  # only the two bad edits
    assert loose.queries["image"][1] == "0001/1003.jpg"  # the documented default path of a missing frame


def test_hub_offline_error(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(BenchmarkNotFoundError) as info:
        load_covr("lucas-ventura/WebVid-CoVR")
    assert "lucas-ventura/WebVid-CoVR" in str(info.value) and "offline" in str(info.value)
