"""WebVid-CoVR (Ventura et al. 2024, composed video retrieval) as a :class:`RetrievalTask`.

Semantics follow lucas-ventura/CoVR:

- ``tools/scripts/download_annotation_covr.sh``: the annotations are CSVs of the Hub dataset
  ``lucas-ventura/WebVid-CoVR`` (``webvid8m-covr_test.csv``: 2,556 triplets); a local copy keeps
  them in the root or in ``annotation/webvid-covr/``.
- ``src/data/webvid_covr.py``: columns ``pth1`` (source video, ``"{folder}/{video_id}"``, the file
  ``{vid_dir}/{pth1}.mp4``), ``pth2`` (target video), ``edit`` (modification text), ``txt1``,
  ``txt2``, ``scores`` (per-frame scores of the target); the query is the source video's
  *middle frame* (``get_middle_frame``: frame ``total_frames // 2``) with
  ``pre_caption(edit, max_words=30)`` (lower-case, punctuation removed, at most 30 words); a
  missing source video is an error for the test split.
- ``src/test/blip2/webvid_covr.py`` (``TestWebVidCoVR``, ``remove_self_similarity=True``): the
  gallery is every row's target; for query *i* every gallery item whose video equals the
  query's *source* video (``pth2[j] == pth1[i]``) gets score -10, i.e. is removed; Recall@k is
  the fraction of queries whose own target ranks < k (R@1/5/10/50).
- Targets: CoVR's test scores a target with the ``emb_pool="query"`` pooling of 15 frame
  embeddings (frames sampled by ``sample_frames``), weighted by ``softmax(scores / 0.1)``.
  ``target="middle"`` (default) uses the target's middle frame as its image (the GCL paper's
  single-image protocol); ``target="scores"`` adds ``frames`` and ``frame_weights`` corpus
  columns so an evaluator can reproduce CoVR's pooled target embedding.

Frames are not decoded from videos here (no video decoder is a dependency): point
``frames_root`` at pre-extracted frames, one of per video ``pth``:

- ``{frames_root}/{pth}.jpg`` (or ``.jpeg``/``.png``): the video's middle frame;
- ``{frames_root}/{pth}/`` a directory of frames (sorted by file name): the middle frame is
  ``frames[len(frames) // 2]`` (frame ``total_frames // 2`` when the directory holds every frame);
  for ``target="scores"`` a directory of more than 15 frames is sub-sampled as CoVR's
  ``sample_frames(15, n)`` does (including its read-at-``index - 1``), up to 15 are used as is.
"""

from __future__ import annotations

import ast
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import datasets as hfds
import numpy as np

from gcl_hf.data.validation import CheckImages, parse_check_images
from gcl_hf.benchmarks._io import (ITEM_FEATURES, NUL_REASON, check_image, read_text_file, require_rows,
                                   resolve_root, rows_dataset)
from gcl_hf.benchmarks.errors import BenchmarkFormatError, BenchmarkNotFoundError, SkipReport
from gcl_hf.benchmarks.task import RetrievalTask
from gcl_hf.errors import ErrorMode
from gcl_hf.data.textfiles import csv_rows

__all__ = [
    "COVR_ANNOTATIONS",
    "COVR_COLUMNS",
    "COVR_REPO",
    "covr_frame_paths",
    "covr_sample_indices",
    "load_covr",
    "pre_caption",
]

logger = logging.getLogger(__name__)

#: The WebVid-CoVR annotation repo on the Hugging Face Hub.
COVR_REPO = "lucas-ventura/WebVid-CoVR"

#: Annotation file per split (CoVR's configs/data/webvid-covr.yaml and configs/test/webvid-covr.yaml).
COVR_ANNOTATIONS = {
    "train": "webvid2m-covr_train.csv",
    "val": "webvid8m-covr_val.csv",
    "test": "webvid8m-covr_test.csv",
}

#: Columns every CoVR annotation CSV must have.
COVR_COLUMNS = ("pth1", "pth2", "edit", "txt1", "txt2", "scores")

_FRAME_EXTS = (".jpg", ".jpeg", ".png")
_N_TARGET_FRAMES = 15  # CoVR's frames_video / n_embs
_SCORE_TEMPERATURE = 0.1  # CoVR's softmax(scores / 0.1)


def pre_caption(caption: str, max_words: int = 30) -> str:
    """CoVR's (BLIP's) caption normalisation: lower-case, ``.!"()*#:;~`` to spaces, at most ``max_words`` words."""
    caption = re.sub(r"([.!\"()*#:;~])", " ", caption.lower())
    caption = re.sub(r"\s{2,}", " ", caption)
    caption = caption.rstrip("\n").strip(" ")
    words = caption.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else caption


def covr_sample_indices(n_frames: int, num: int = _N_TARGET_FRAMES) -> list[int]:
    """The frame positions CoVR's ``FrameLoader.get_video_frames`` reads: ``sample_frames`` then ``index - 1``."""
    count = min(num, n_frames)
    bounds = np.linspace(start=0, stop=n_frames, num=count + 1).astype(int).tolist()
    middles = [(bounds[i] + bounds[i + 1] - 1) // 2 for i in range(count)]
    return [max(index - 1, 0) for index in middles]


def covr_frame_paths(frames_root: str | os.PathLike, pth: str) -> list[str] | None:
    """Frames of video ``pth`` under ``frames_root`` (relative paths): ``[pth.ext]`` or the sorted ``pth/`` directory."""
    root = Path(frames_root)
    for ext in _FRAME_EXTS:
        if (root / f"{pth}{ext}").is_file():
            return [f"{pth}{ext}"]
    directory = root / pth
    if directory.is_dir():
        names = sorted(p.name for p in directory.iterdir() if p.suffix.lower() in _FRAME_EXTS and p.is_file())
        if names:
            return [f"{pth}/{name}" for name in names]
    return None


def _softmax(values: list[float]) -> list[float]:
    peak = max(values)
    exps = [math.exp((v - peak) / _SCORE_TEMPERATURE) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def _find_annotation(root: Path, split: str, annotation: str | os.PathLike | None) -> Path:
    if annotation is not None:
        path = Path(annotation)
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise BenchmarkNotFoundError(f"CoVR: annotation file not found: {path}")
        return path
    if split not in COVR_ANNOTATIONS:
        raise ValueError(f"CoVR: split must be one of {sorted(COVR_ANNOTATIONS)}, got {split!r}")
    name = COVR_ANNOTATIONS[split]
    tried = [root / name, root / "annotation" / "webvid-covr" / name]
    for path in tried:
        if path.is_file():
            return path
    raise BenchmarkNotFoundError(f"CoVR: annotation file not found (tried {', '.join(map(str, tried))})")


def load_covr(
    root_or_repo: str | os.PathLike | None = None,
    *,
    split: str = "test",
    annotation: str | os.PathLike | None = None,
    frames_root: str | os.PathLike | None = None,
    target: str = "middle",
    format_text: bool = True,
    max_words: int = 30,
    remove_self: bool = True,
    check_images: CheckImages | bool = "exists",
    errors: ErrorMode = "raise",
    revision: str | None = None,
) -> list[RetrievalTask]:
    """Load WebVid-CoVR from a local copy (or the annotation CSVs of ``lucas-ventura/WebVid-CoVR``).

    Args:
        root_or_repo: a directory holding the CSV (at its top or in ``annotation/webvid-covr/``)
            or a Hub dataset repo id (default ``lucas-ventura/WebVid-CoVR``; only the CSV is fetched).
        split: ``"test"`` (``webvid8m-covr_test.csv``), ``"val"`` or ``"train"``.
        annotation: an explicit CSV path (absolute or relative to the root) instead of ``split``'s.
        frames_root: the pre-extracted frames (see the module docstring); default ``{root}/frames``.
        target: ``"middle"`` (target = its middle frame) or ``"scores"`` (also ``frames`` and
            ``frame_weights`` corpus columns for CoVR's score-weighted pooling).
        format_text: apply CoVR's ``pre_caption(edit, max_words)`` to the edit texts.
        remove_self: CoVR's self-similarity removal (``task.exclude``).
        check_images / errors / revision: as in :func:`gcl_hf.benchmarks.load_mbeir`.

    Returns a one-element list: the task ``covr_{split}`` (metric ``"recall"``, k = 1, 5, 10, 50).
    Query ids are the CSV's 0-based data row numbers, corpus ids the target videos' ``pth2``.
    """
    if target not in ("middle", "scores"):
        raise ValueError(f"target must be 'middle' or 'scores', got {target!r}")
    SkipReport(errors)  # validates the option before any work
    check_images = parse_check_images(check_images)
    names = [Path(annotation).name] if annotation is not None else [COVR_ANNOTATIONS.get(split, f"*covr_{split}.csv")]
    root, from_hub = resolve_root(
        root_or_repo, default_repo=COVR_REPO, allow_patterns=names, revision=revision, what="CoVR"
    )
    csv_path = _find_annotation(root, split, annotation)
    if frames_root is None:
        if from_hub and check_images != "none":
            raise BenchmarkNotFoundError(
                "CoVR: the Hub repo holds only annotations; download the WebVid videos (CoVR's "
                "tools/scripts/download_covr.py), extract their middle frames and pass frames_root=... "
                "(or check_images=False)"
            )
        frames_root = root / "frames"
    frames_root = str(frames_root)

    skips = SkipReport(errors)
    frame_cache: dict[str, list[str] | None] = {}

    def frames_of(pth: str, *, line: int, row: int, field: str) -> list[str]:
        if pth not in frame_cache:
            frame_cache[pth] = covr_frame_paths(frames_root, pth)
        frames = frame_cache[pth]
        if frames is None:
            if check_images != "none":
                raise BenchmarkFormatError(
                    f"no frame for video {pth!r} under {frames_root!r} (expected {pth}.jpg/.png or a directory {pth}/)",
                    file=csv_path, line=line, row=row, field=field,
                )
            frames = [f"{pth}.jpg"]
        return frames

    query_rows: list[dict] = []
    gallery: dict[str, dict] = {}
    sources: dict[str, str] = {}
    decoded = read_text_file(csv_path)
    rows = csv_rows(decoded.text, ",", lambda reason, line: BenchmarkFormatError(reason, file=csv_path, line=line))
    first_row = next(rows, None)
    header = first_row[2] if first_row is not None else []
    if first_row is not None and first_row[0] in decoded.bad_lines:
        raise decoded.bad_lines[first_row[0]]
    missing = [c for c in COVR_COLUMNS if c not in header]
    if missing:
        raise BenchmarkFormatError(f"missing column(s) {missing} (header: {header})", file=csv_path, line=1, field=missing[0])
    for row_number, (line, last, fields) in enumerate(rows):
        try:
            bad = next((n for n in range(line, last + 1) if n in decoded.bad_lines), None)
            if bad is not None:
                raise decoded.bad_lines[bad]
            record = dict(zip(header, fields))
            values = {}
            for column in ("pth1", "pth2", "edit"):
                value = (record.get(column) or "").strip()
                if not value:
                    raise BenchmarkFormatError("empty value", file=csv_path, line=line, row=row_number, field=column)
                if "\x00" in value:
                    raise BenchmarkFormatError(NUL_REASON, file=csv_path, line=line, row=row_number, field=column)
                values[column] = value
            pth1, pth2 = values["pth1"], values["pth2"]
            edit = pre_caption(values["edit"], max_words) if format_text else values["edit"]
            if not edit:
                raise BenchmarkFormatError("edit text is empty after pre_caption", file=csv_path, line=line, row=row_number, field="edit")
            source_frames = frames_of(pth1, line=line, row=row_number, field="pth1")
            query_image = source_frames[len(source_frames) // 2]
            check_image(query_image, image_root=frames_root, mode=check_images, file=csv_path, line=line, row=row_number, field="pth1")
            item = gallery.get(pth2)
            if item is None:
                target_frames = frames_of(pth2, line=line, row=row_number, field="pth2")
                image = target_frames[len(target_frames) // 2]
                check_image(image, image_root=frames_root, mode=check_images, file=csv_path, line=line, row=row_number, field="pth2")
                item = {"id": pth2, "text": None, "image": image, "modality": "image"}
                if target == "scores":
                    item.update(_pooled_frames(record.get("scores"), target_frames, frames_root, check_images,
                                               file=csv_path, line=line, row=row_number))
        except BenchmarkFormatError as err:
            skips.handle(err)
            continue
        gallery.setdefault(pth2, item)
        qid = str(row_number)
        sources[qid] = pth1
        query_rows.append({"id": qid, "text": edit, "image": query_image, "modality": "image,text", "_target": pth2})

    require_rows(len(query_rows), what="rows", file=csv_path, skips=skips)
    queries: list[dict] = []
    qrels: dict[str, set[str]] = {}
    for row in query_rows:
        qrels[row["id"]] = {row.pop("_target")}
        queries.append(row)
    features = ITEM_FEATURES
    if target == "scores":
        features = hfds.Features(
            {**ITEM_FEATURES, "frames": hfds.List(hfds.Value("string")), "frame_weights": hfds.List(hfds.Value("float32"))}
        )
    corpus: list[dict] = []
    for item in gallery.values():
        corpus.append(item)
    exclude = None
    if remove_self:
        exclude = {qid: {pth1} for qid, pth1 in sources.items() if pth1 in gallery}
    name = f"covr_{split}" if annotation is None else f"covr_{Path(annotation).stem}"
    skips.log(logger, name)
    return [
        RetrievalTask(
            name=name,
            queries=rows_dataset(queries, ITEM_FEATURES),
            corpus=rows_dataset(corpus, features),
            qrels=qrels,
            metric="recall",
            k=(1, 5, 10, 50),
            image_root=frames_root,
            exclude=exclude,
            meta={
                "benchmark": "covr",
                "split": split,
                "headline_k": 1,
                "target": target,
                "remove_self": remove_self,
                "queries_file": str(csv_path),
                "corpus_file": str(csv_path),
                "excluded_queries": 0 if exclude is None else len(exclude),
                "skipped": skips.count,
                "skip_report": skips.to_dict(),
            },
        )
    ]


def _pooled_frames(raw_scores: Any, frames: list[str], frames_root: str, check_images, *, file, line, row) -> dict:
    """``frames`` (CoVR's sampled frames) and ``frame_weights`` (``softmax(scores / 0.1)``, uniform if unusable)."""
    if len(frames) > _N_TARGET_FRAMES:
        frames = [frames[i] for i in covr_sample_indices(len(frames))]
    for frame in frames:
        check_image(frame, image_root=frames_root, mode=check_images, file=file, line=line, row=row, field="pth2")
    shown = raw_scores if len(raw_scores or "") <= 80 else f"{raw_scores[:77]}..."
    try:
        scores = ast.literal_eval((raw_scores or "").strip() or "[]")
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):  # deep nesting: the last two
        raise BenchmarkFormatError(f"cannot parse {shown!r} as a list of numbers", file=file, line=line, row=row,
                                   field="scores") from None
    if not isinstance(scores, (list, tuple)) or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) for s in scores):
        raise BenchmarkFormatError(f"expected a list of finite numbers, got {shown!r}", file=file, line=line, row=row,
                                   field="scores")
    if len(scores) == len(frames) and scores:
        weights = _softmax([float(s) for s in scores])
    else:  # CoVR: no scores, or not one per frame -> equal weights
        weights = [1.0 / len(frames)] * len(frames)
    return {"frames": frames, "frame_weights": weights}
