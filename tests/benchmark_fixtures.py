"""Tiny copies of the benchmarks in their real published layouts, written at test time.

``write_mbeir``, ``write_mmeb`` and ``write_covr`` write a few queries and candidates per task
with 8x8 PNG images into a directory (usually ``tmp_path``) and return a description of what
they wrote (ids, relevance, file paths) so tests can check loaders and evaluators against it.

Layouts (see the loaders' docstrings for the reference code they follow):

- M-BEIR (TIGER-Lab/M-BEIR): ``query/test/mbeir_{d}_task{t}_test.jsonl``,
  ``cand_pool/local/mbeir_{d}_task{t}[_test]_cand_pool.jsonl`` (MSCOCO's pools carry the split,
  the others do not), ``cand_pool/global/mbeir_union_test_cand_pool.jsonl``,
  ``qrels/test/mbeir_{d}_task{t}_test_qrels.txt``, ``instructions/query_instructions.tsv``,
  images under ``mbeir_images/``.
- MMEB (TIGER-Lab/MMEB-eval): ``{subset}/test-00000-of-00001.parquet``, images under
  ``eval_images/`` (where VLM2Vec's README unzips ``images.zip``).
- CoVR (lucas-ventura/WebVid-CoVR): ``webvid8m-covr_test.csv``, pre-extracted middle frames
  under ``frames/{pth}.png`` (some as a directory of frames ``frames/{pth}/``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

__all__ = ["write_covr", "write_mbeir", "write_mmeb", "write_png"]


def write_png(path: Path, seed: int, size: int = 8) -> Path:
    """An 8x8 RGB PNG whose colour is a deterministic function of ``seed``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    color = ((seed * 67) % 256, (seed * 131 + 40) % 256, (seed * 29 + 90) % 256)
    Image.new("RGB", (size, size), color).save(path, format="PNG")
    return path


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


# --------------------------------------------------------------------------------------------- M-BEIR

_MBEIR_TASKS = {
    # name: (dataset id, task id, query modality, candidate modality, pool file carries the split)
    "mscoco_task0": (9, 0, "text", "image", True),
    "mscoco_task3": (9, 3, "image", "text", True),
    "webqa_task2": (2, 2, "text", "image,text", False),
    "cirr_task7": (8, 7, "image,text", "image", False),
    "fashioniq_task7": (7, 7, "image,text", "image", False),
}

_DATASET_NAMES = {9: "MSCOCO", 2: "WebQA", 8: "CIRR", 7: "FashionIQ"}


def write_mbeir(root: Path, *, split: str = "test", tasks: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Write a small M-BEIR copy under ``root``; returns ``{"root", "tasks", "global_pool", "instructions"}``.

    ``tasks[name]`` holds ``qids``, ``dids`` (the local pool, in file order), ``qrels``
    (qid -> set of dids), ``query_modality``, ``candidate_modality`` and the ``queries_file``,
    ``pool_file`` and ``qrels_file`` paths. Each task has 3 queries and 4 candidates; the first
    query of ``mscoco_task3`` has two relevant candidates.
    """
    root = Path(root)
    names = tasks or tuple(_MBEIR_TASKS)
    info: dict[str, Any] = {"root": root, "tasks": {}}
    union: list[dict] = []
    image_seed = 0
    for name in names:
        dataset_id, task_id, q_mod, c_mod, pool_has_split = _MBEIR_TASKS[name]
        dataset = name.split("_task")[0]
        image_dir = f"mbeir_images/{dataset}_images/{name}"
        candidates, dids = [], []
        for n in range(4):
            did = f"{dataset_id}:{task_id * 100 + n + 1}"
            row: dict[str, Any] = {"txt": None, "img_path": None, "modality": c_mod, "did": did, "src_content": None}
            if "image" in c_mod:
                image_seed += 1
                rel = f"{image_dir}/cand_{n}.png"
                write_png(root / rel, image_seed)
                row["img_path"] = rel
            if "text" in c_mod:
                row["txt"] = f"candidate {n} of {name}"
            candidates.append(row)
            dids.append(did)
        queries, qrels, qids = [], {}, []
        for n in range(3):
            qid = f"{dataset_id}:{task_id * 100 + n + 1}"
            positives = [dids[n]] + ([dids[3]] if (name == "mscoco_task3" and n == 0) else [])
            row = {
                "qid": qid,
                "query_txt": None,
                "query_img_path": None,
                "query_modality": q_mod,
                "query_src_content": None,
                "pos_cand_list": positives,
                "neg_cand_list": [d for d in dids if d not in positives][:1],
                "task_id": task_id,
            }
            if "image" in q_mod:
                image_seed += 1
                rel = f"{image_dir}/query_{n}.png"
                write_png(root / rel, image_seed)
                row["query_img_path"] = rel
            if "text" in q_mod:
                row["query_txt"] = f"query {n} for {name}"
            queries.append(row)
            qrels[qid] = set(positives)
            qids.append(qid)
        queries_file = _write_jsonl(root / "query" / split / f"mbeir_{name}_{split}.jsonl", queries)
        pool_name = f"mbeir_{name}_{split}_cand_pool.jsonl" if pool_has_split else f"mbeir_{name}_cand_pool.jsonl"
        pool_file = _write_jsonl(root / "cand_pool" / "local" / pool_name, candidates)
        qrels_file = root / "qrels" / split / f"mbeir_{name}_{split}_qrels.txt"
        qrels_file.parent.mkdir(parents=True, exist_ok=True)
        with open(qrels_file, "w") as handle:
            for query in queries:
                for did in query["pos_cand_list"]:
                    handle.write(f"{query['qid']} 0 {did} 1 {task_id}\n")
        union.extend(candidates)
        info["tasks"][name] = {
            "dataset": dataset,
            "task_id": task_id,
            "qids": qids,
            "dids": dids,
            "qrels": qrels,
            "query_modality": q_mod,
            "candidate_modality": c_mod,
            "queries_file": queries_file,
            "pool_file": pool_file,
            "qrels_file": qrels_file,
        }
    union.sort(key=lambda r: tuple(int(x) for x in r["did"].split(":")))
    info["global_pool"] = _write_jsonl(root / "cand_pool" / "global" / f"mbeir_union_{split}_cand_pool.jsonl", union)

    header = ["query_modality", "cand_modality", "dataset_name", "dataset_id", "prompt_1", "prompt_2", "prompt_3", "prompt_4"]
    lines = ["\t".join(header)]
    seen = set()
    for name in names:
        dataset_id, _, q_mod, c_mod, _ = _MBEIR_TASKS[name]
        if (dataset_id, q_mod, c_mod) in seen:
            continue
        seen.add((dataset_id, q_mod, c_mod))
        what = {"image": "an image", "text": "a text", "image,text": "an image with text"}[c_mod]
        prompts = [f"retrieve {what} for this {q_mod} query ({v})" for v in ("a", "b", "c")] + [""]
        lines.append("\t".join([q_mod, c_mod, _DATASET_NAMES[dataset_id], str(dataset_id), *prompts]))
    instructions = root / "instructions" / "query_instructions.tsv"
    instructions.parent.mkdir(parents=True, exist_ok=True)
    instructions.write_text("\n".join(lines) + "\n")
    info["instructions"] = instructions
    return info


# --------------------------------------------------------------------------------------------- MMEB

IMAGE_TOKEN = "<|image_1|>"


def _mmeb_rows(subset: str, image: callable) -> list[dict]:
    """Three rows, four candidates each (positive first); candidates overlap between rows."""
    rows = []
    if subset == "MSCOCO_i2t":  # image query with an instruction -> text captions
        caps = [f"a caption number {i}" for i in range(5)]
        for n in range(3):
            rows.append({
                "qry_text": f"{IMAGE_TOKEN}\nFind an image caption describing the given everyday image.",
                "qry_img_path": image(f"q{n}"),
                "tgt_text": [caps[n], caps[(n + 1) % 5], caps[(n + 2) % 5], caps[4]],
                "tgt_img_path": ["", "", "", ""],
            })
    elif subset == "MSCOCO_t2i":  # text query -> bare images
        imgs = [image(f"c{i}") for i in range(5)]
        for n in range(3):
            rows.append({
                "qry_text": f"Find me an everyday image that matches the given caption: caption {n}",
                "qry_img_path": "",
                "tgt_text": [IMAGE_TOKEN] * 4,
                "tgt_img_path": [imgs[n], imgs[(n + 1) % 5], imgs[(n + 2) % 5], imgs[4]],
            })
    elif subset == "CIRR":  # image + modification text -> images
        imgs = [image(f"c{i}") for i in range(5)]
        for n in range(3):
            rows.append({
                "qry_text": f"{IMAGE_TOKEN}\nGiven an image, find a similar everyday image with the described changes: edit {n}",
                "qry_img_path": image(f"q{n}"),
                "tgt_text": [IMAGE_TOKEN] * 4,
                "tgt_img_path": [imgs[(n + 1) % 5], imgs[n], imgs[(n + 2) % 5], imgs[4]],
            })
    elif subset == "WebQA":  # text query -> image + text items
        imgs = [image(f"c{i}") for i in range(5)]
        for n in range(3):
            rows.append({
                "qry_text": f"Find a Wikipedia image that answers this question: question {n}",
                "qry_img_path": "",
                "tgt_text": [f"{IMAGE_TOKEN}\nRepresent the given Wikipedia image with related text information: page {(n + j) % 5}"
                             for j in range(3)] + [f"{IMAGE_TOKEN}\nRepresent the given Wikipedia image with related text information: page 4"],
                "tgt_img_path": [imgs[n], imgs[(n + 1) % 5], imgs[(n + 2) % 5], imgs[4]],
            })
    else:
        raise ValueError(f"no fixture rows for MMEB subset {subset!r}")
    return rows


MMEB_SCHEMA = pa.schema(
    [
        ("qry_text", pa.string()),
        ("qry_img_path", pa.string()),
        ("tgt_text", pa.list_(pa.string())),
        ("tgt_img_path", pa.list_(pa.string())),
    ]
)


def write_mmeb_parquet(path: Path, rows: list[dict], schema: pa.Schema = MMEB_SCHEMA) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def write_mmeb(root: Path, *, subsets: tuple[str, ...] = ("MSCOCO_i2t", "MSCOCO_t2i", "CIRR", "WebQA")) -> dict[str, Any]:
    """Write MMEB-eval parquet files and images under ``root``.

    Returns ``{"root", "image_root", "subsets": {subset: {"file", "rows"}}}`` where ``rows`` are
    the raw parquet rows (image paths relative to ``image_root = root / "eval_images"``).
    """
    root = Path(root)
    image_root = root / "eval_images"
    info: dict[str, Any] = {"root": root, "image_root": image_root, "subsets": {}}
    seed = [1000]

    for subset in subsets:
        def image(tag: str, subset=subset) -> str:
            rel = f"{subset}/Test/{tag}.png"
            if not (image_root / rel).exists():
                seed[0] += 1
                write_png(image_root / rel, seed[0])
            return rel

        rows = _mmeb_rows(subset, image)
        path = write_mmeb_parquet(root / subset / "test-00000-of-00001.parquet", rows)
        info["subsets"][subset] = {"file": path, "rows": rows}
    return info


# --------------------------------------------------------------------------------------------- CoVR

COVR_COLUMNS = ["pth1", "pth2", "edit", "txt1", "txt2", "scores"]


def write_covr_csv(path: Path, rows: list[dict], columns: list[str] = COVR_COLUMNS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    return path


def write_covr(root: Path, *, split: str = "test") -> dict[str, Any]:
    """Write a WebVid-CoVR annotation CSV (5 triplets) and pre-extracted frames under ``root``.

    Videos chain A->B->C->D->E (row i edits video i into video i+1), so the source video of
    rows 1-3 is also a target of the previous row: CoVR's self-similarity removal excludes it.
    Row 4 starts a separate chain F->G. Videos ``0002/2001`` and ``0002/2002`` (the last row's)
    are stored as frame directories of 5 frames; the others as a single middle frame
    ``frames/{pth}.png``. Returns ``{"root", "csv", "frames_root", "rows", "frame_files"}``.
    """
    root = Path(root)
    frames_root = root / "frames"
    videos = ["0001/1001", "0001/1002", "0001/1003", "0001/1004", "0001/1005", "0002/2001", "0002/2002"]
    frame_files: dict[str, Any] = {}
    for index, pth in enumerate(videos):
        if pth.startswith("0002/"):
            files = [write_png(frames_root / pth / f"{f:04d}.png", 500 + 10 * index + f) for f in range(5)]
            frame_files[pth] = files
        else:
            frame_files[pth] = write_png(frames_root / f"{pth}.png", 500 + 10 * index)
    pairs = [(videos[0], videos[1]), (videos[1], videos[2]), (videos[2], videos[3]), (videos[3], videos[4]), (videos[5], videos[6])]
    rows = []
    for n, (a, b) in enumerate(pairs):
        n_scores = 5 if b.startswith("0002/") else 15
        rows.append({
            "pth1": a,
            "pth2": b,
            "edit": f"Make it {['red', 'blue', 'bigger', 'at night', 'snowy'][n]}!",
            "txt1": f"caption of {a}",
            "txt2": f"caption of {b}",
            "scores": json.dumps([round(0.2 + 0.01 * i, 4) for i in range(n_scores)]),
        })
    csv_path = write_covr_csv(root / f"webvid8m-covr_{split}.csv", rows)
    return {"root": root, "csv": csv_path, "frames_root": frames_root, "rows": rows, "frame_files": frame_files}
