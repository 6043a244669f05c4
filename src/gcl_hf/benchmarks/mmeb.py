"""MMEB (VLM2Vec, Jiang et al. 2024) retrieval subsets as :class:`RetrievalTask` s.

Semantics follow TIGER-AI-Lab/VLM2Vec v1 (``src/dataset.py`` ``EvalDataset``,
``evaluation/eval_clip.py``, ``evaluation/eval_utils.py`` ``get_pred``):

- each subset of ``TIGER-Lab/MMEB-eval`` is one parquet table (``{subset}/test-*.parquet``) with
  ``qry_text``, ``qry_img_path``, ``tgt_text`` (list) and ``tgt_img_path`` (list); an empty image
  path means no image, an absolute path is used as is, a relative one is joined to the image
  directory (``--image_dir``; the README unzips ``images.zip`` into ``eval_images/``);
- queries and targets are embedded once per distinct ``(text, img_path)`` pair (``get_paired_data``):
  the corpus here is the union of the distinct target pairs, with stable ids in order of first
  appearance;
- every row is scored against its own candidate list only; the prediction is ``argmax`` of the
  scores (ties go to the earliest candidate) and the row is correct when it is index 0, the
  positive -- Precision@1, reported as a percentage over all rows;
- ``<|image_1|>`` is Phi-3-V's image placeholder. For a CLIP-like dual encoder VLM2Vec's
  ``eval_clip.py`` (``embedding_type="multimodal"``) embeds an item with both a text and an image
  as the *sum* of the two embeddings, and it tokenizes the text as stored, placeholder included: so
  by default the placeholder is kept and an item with an image and a text is ``"image,text"`` (fused),
  with an image only ``"image"``. ``strip_image_token=True`` removes the placeholder first (an item whose
  text was only the placeholder then becomes ``"image"``), which is what a model that never saw the
  token may prefer; it is not VLM2Vec's baseline.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from gcl_hf.data.validation import CheckImages, parse_check_images
from gcl_hf.benchmarks._io import (ITEM_FEATURES, NUL_REASON, check_image, require_rows, resolve_root,
                                   rows_dataset)
from gcl_hf.benchmarks.errors import BenchmarkFormatError, BenchmarkNotFoundError, SkipReport
from gcl_hf.benchmarks.task import RetrievalTask
from gcl_hf.errors import ErrorMode

__all__ = ["IMAGE_TOKEN", "MMEB_REPO", "MMEB_RETRIEVAL_SUBSETS", "load_mmeb", "mmeb_parquet_files"]

logger = logging.getLogger(__name__)

#: The MMEB evaluation repo on the Hugging Face Hub.
MMEB_REPO = "TIGER-Lab/MMEB-eval"

#: The 12 retrieval subsets of MMEB (VLM2Vec paper, Table 1 "Retrieval").
MMEB_RETRIEVAL_SUBSETS = (
    "VisDial",
    "CIRR",
    "VisualNews_t2i",
    "VisualNews_i2t",
    "MSCOCO_t2i",
    "MSCOCO_i2t",
    "NIGHTS",
    "WebQA",
    "FashionIQ",
    "Wiki-SS-NQ",
    "OVEN",
    "EDIS",
)

#: Phi-3-V's image placeholder used in MMEB texts.
IMAGE_TOKEN = "<|image_1|>"

_COLUMNS = ("qry_text", "qry_img_path", "tgt_text", "tgt_img_path")


def mmeb_parquet_files(root: str | os.PathLike, subset: str, split: str = "test") -> list[Path]:
    """The parquet shards of ``subset``: ``{subset}/{split}-*.parquet`` (or ``{subset}/{split}/*.parquet``)."""
    directory = Path(root) / subset
    files = sorted(directory.glob(f"{split}-*.parquet")) or sorted((directory / split).glob("*.parquet"))
    return files


def _strip_token(text: str, strip: bool) -> str:
    return (text.replace(IMAGE_TOKEN, "") if strip else text).strip()


def _modality(text: str, image: str | None) -> str | None:
    if image is not None:
        return "image,text" if text else "image"
    return "text" if text else None


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)


def _is_text_list(kind: pa.DataType) -> bool:
    return (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and _is_text(kind.value_type)


#: What each column's Arrow type may be (tgt_text: a list, or "" standing for one empty text per target).
_TYPES = {
    "qry_text": (_is_text, "strings"),
    "qry_img_path": (_is_text, "strings"),
    "tgt_text": (lambda kind: _is_text_list(kind) or _is_text(kind), "lists of strings"),
    "tgt_img_path": (_is_text_list, "lists of strings"),
}


def _check_types(schema: pa.Schema, file: Path) -> None:
    """A column of the wrong type is the file's fault, not each row's: one error, whatever ``errors`` says."""
    for column, (ok, expected) in _TYPES.items():
        kind = schema.field(column).type
        if not ok(kind):
            raise BenchmarkFormatError(f"column of {kind}, expected {expected}", file=file, field=column)


def _load_subset(
    files: list[Path], *, image_root: str, check_images, strip_image_token: bool, skips: SkipReport
) -> tuple[Any, Any, dict[str, set[str]], dict[str, list[str]]]:
    queries: list[dict] = []
    corpus: list[dict] = []
    pair_ids: dict[tuple[str, str], str] = {}
    qrels: dict[str, set[str]] = {}
    candidates: dict[str, list[str]] = {}
    checked: set[str] = set()

    def image_ok(path: str, file: Path, row: int, field: str) -> None:
        if path not in checked:
            check_image(path, image_root=image_root, mode=check_images, file=file, row=row, field=field)
            checked.add(path)

    row_offset = 0  # query ids are row numbers across the subset's shards (stable under errors="skip")
    for file in files:
        try:
            table = pq.read_table(file)
        except (pa.ArrowException, OSError) as exc:
            raise BenchmarkFormatError(f"not a readable parquet file ({exc})", file=file) from None
        missing = [c for c in _COLUMNS if c not in table.column_names]
        if missing:
            raise BenchmarkFormatError(
                f"missing column(s) {missing} (has {table.column_names})", file=file, field=missing[0]
            )
        _check_types(table.schema, file)
        records = table.select(list(_COLUMNS)).to_pylist()
        for row_number, record in enumerate(records):
            try:
                qry_text, qry_img = record["qry_text"], record["qry_img_path"]
                tgt_text, tgt_img = record["tgt_text"], record["tgt_img_path"]
                if not isinstance(qry_text, str):
                    raise BenchmarkFormatError(
                        f"expected a string, got {type(qry_text).__name__}", file=file, row=row_number, field="qry_text"
                    )
                texts = {"qry_text": qry_text, **{f"tgt_text[{i}]": t for i, t in enumerate(tgt_text or [])}}
                for field, text in texts.items():
                    if isinstance(text, str) and "\x00" in text:
                        raise BenchmarkFormatError(NUL_REASON, file=file, row=row_number, field=field)
                if qry_img is not None and not isinstance(qry_img, str):
                    raise BenchmarkFormatError(
                        f"expected a string, got {type(qry_img).__name__}", file=file, row=row_number, field="qry_img_path"
                    )
                if not isinstance(tgt_img, list) or not tgt_img:
                    raise BenchmarkFormatError("expected a non-empty list of image paths", file=file, row=row_number, field="tgt_img_path")
                if tgt_text == "" or tgt_text is None:  # VLM2Vec: "" stands for one empty text per target
                    tgt_text = [""] * len(tgt_img)
                if not isinstance(tgt_text, list):
                    raise BenchmarkFormatError(
                        f"expected a list of texts, got {type(tgt_text).__name__}", file=file, row=row_number, field="tgt_text"
                    )
                if len(tgt_text) != len(tgt_img):
                    raise BenchmarkFormatError(
                        f"{len(tgt_text)} target texts but {len(tgt_img)} target image paths",
                        file=file, row=row_number, field="tgt_img_path",
                    )
                q_image = qry_img or None
                q_text = _strip_token(qry_text, strip_image_token)
                if IMAGE_TOKEN in qry_text and q_image is None:
                    raise BenchmarkFormatError(
                        f"the query text has {IMAGE_TOKEN} but qry_img_path is empty", file=file, row=row_number, field="qry_img_path"
                    )
                q_modality = _modality(q_text, q_image)
                if q_modality is None:
                    raise BenchmarkFormatError("empty query (no text and no image)", file=file, row=row_number, field="qry_text")
                if q_image is not None:
                    image_ok(q_image, file, row_number, "qry_img_path")
                pending: dict[tuple[str, str], dict] = {}  # new distinct pairs of this row
                ids: list[str] = []
                for position, (raw_text, raw_img) in enumerate(zip(tgt_text, tgt_img)):
                    key = (raw_text or "", raw_img or "")
                    if key in pair_ids:
                        cid = pair_ids[key]
                    elif key in pending:
                        cid = pending[key]["id"]
                    else:
                        c_image = key[1] or None
                        c_text = _strip_token(key[0], strip_image_token)
                        if IMAGE_TOKEN in key[0] and c_image is None:
                            raise BenchmarkFormatError(
                                f"the target text has {IMAGE_TOKEN} but its image path is empty",
                                file=file, row=row_number, field=f"tgt_img_path[{position}]",
                            )
                        c_modality = _modality(c_text, c_image)
                        if c_modality is None:
                            raise BenchmarkFormatError(
                                "empty candidate (no text and no image)", file=file, row=row_number, field=f"tgt_text[{position}]"
                            )
                        if c_image is not None:
                            image_ok(c_image, file, row_number, f"tgt_img_path[{position}]")
                        cid = f"c{len(pair_ids) + len(pending)}"
                        pending[key] = {"id": cid, "text": c_text or None, "image": c_image, "modality": c_modality}
                    if cid not in ids:  # a repeated candidate is one candidate
                        ids.append(cid)
            except BenchmarkFormatError as err:
                skips.handle(err)
                continue
            for key, item in pending.items():
                pair_ids[key] = item["id"]
                corpus.append(item)
            qid = f"q{row_offset + row_number}"
            queries.append({"id": qid, "text": q_text or None, "image": q_image, "modality": q_modality})
            candidates[qid] = ids
            qrels[qid] = {ids[0]}
        row_offset += len(records)
    return (rows_dataset(queries, ITEM_FEATURES),
            rows_dataset(corpus, ITEM_FEATURES), qrels, candidates)


def load_mmeb(
    root_or_repo: str | os.PathLike | None = None,
    *,
    subsets: list[str] | tuple[str, ...] | None = None,
    split: str = "test",
    image_root: str | os.PathLike | None = None,
    strip_image_token: bool = False,
    check_images: CheckImages | bool = "exists",
    errors: ErrorMode = "raise",
    revision: str | None = None,
) -> list[RetrievalTask]:
    """Load MMEB retrieval subsets from a local copy (or the Hub repo ``TIGER-Lab/MMEB-eval``).

    Args:
        root_or_repo: a directory holding ``{subset}/test-*.parquet`` or a Hub dataset repo id
            (default ``TIGER-Lab/MMEB-eval``; only the parquet files are fetched, not ``images.zip``).
        subsets: which subsets (default: the 12 retrieval subsets present in ``MMEB_RETRIEVAL_SUBSETS``
            order; with a local root, missing subsets raise).
        image_root: the image directory the paths are relative to (VLM2Vec's ``--image_dir``);
            default ``{root}/eval_images`` when it exists, else ``root``.
        strip_image_token: remove ``<|image_1|>`` from texts. Default ``False``: texts as stored, as
            VLM2Vec's CLIP baseline (``eval_clip.py``) embeds them, so numbers compare with its reports.
        check_images / errors / revision: as in :func:`gcl_hf.benchmarks.load_mbeir`.

    Returns one task per subset, named ``mmeb_{subset}``, metric ``"precision_at_1"`` with
    ``task.candidates`` (each query's own list, positive first) and ``qrels`` = that positive.
    """
    SkipReport(errors)  # validates the option before any work
    check_images = parse_check_images(check_images)
    chosen = list(subsets) if subsets is not None else list(MMEB_RETRIEVAL_SUBSETS)
    patterns = [p for s in chosen for p in (f"{s}/{split}-*.parquet", f"{s}/{split}/*.parquet")]
    root, from_hub = resolve_root(root_or_repo, default_repo=MMEB_REPO, allow_patterns=patterns, revision=revision, what="MMEB")
    if image_root is None:
        if from_hub and check_images != "none":
            raise BenchmarkNotFoundError(
                "MMEB: the images are not fetched from the Hub (images.zip); download and unzip it, then pass "
                "image_root=<the unzipped directory> (or check_images=False)"
            )
        image_root = root / "eval_images" if (root / "eval_images").is_dir() else root
    image_root = str(image_root)

    tasks: list[RetrievalTask] = []
    for subset in chosen:
        files = mmeb_parquet_files(root, subset, split)
        if not files:
            raise BenchmarkNotFoundError(
                f"MMEB: no parquet files for subset {subset!r} ({root / subset}/{split}-*.parquet)"
            )
        skips = SkipReport(errors)
        queries, corpus, qrels, candidates = _load_subset(
            files, image_root=image_root, check_images=check_images,
            strip_image_token=strip_image_token, skips=skips,
        )
        require_rows(len(queries), what="rows", file=files[0] if len(files) == 1 else files[0].parent, skips=skips)
        name = f"mmeb_{subset}"
        skips.log(logger, name)
        tasks.append(
            RetrievalTask(
                name=name,
                queries=queries,
                corpus=corpus,
                qrels=qrels,
                metric="precision_at_1",
                k=(1,),
                image_root=image_root,
                candidates=candidates,
                meta={
                    "benchmark": "mmeb",
                    "subset": subset,
                    "split": split,
                    "headline_k": 1,
                    "queries_file": str(files[0]) if len(files) == 1 else [str(f) for f in files],
                    "corpus_file": str(files[0]) if len(files) == 1 else [str(f) for f in files],
                    "strip_image_token": strip_image_token,
                    "skipped": skips.count,
                    "skip_report": skips.to_dict(),
                },
            )
        )
    return tasks
