"""M-BEIR queries and candidate pools as Arrow-backed ``Dataset`` s (the 5.6M-item union pool is memory-mapped).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets as hfds
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from gcl_hf.benchmarks._io import ITEM_FEATURES, rows_dataset, cached_dataset, check_image, check_modality, iter_jsonl, optional_str, required_str
from gcl_hf.benchmarks.errors import BenchmarkFormatError, SkipReport
from gcl_hf.benchmarks.mbeir.files import CAND_BOUND, QUERY_BOUND, MBEIR_TASK_MODALITIES, MBEIRTaskFiles, parse_id, format_string


def _present_modality(text: str | None, image: str | None) -> str:
    """The modality UniIR embeds: image when a path is set, text when non-empty, both fused."""
    if image is not None and text:
        return "image,text"
    return "image" if image is not None else "text"


def _check_halves(obj: dict, modality: str, text: str | None, image: str | None, fields: tuple[str, str], kind: str,
                  *, file: Any, line: int, image_root, check_images) -> None:
    """The text and image an item's declared ``modality`` needs are there (``fields``: its text and image keys),
    and its image file passes ``check_images``."""
    text_field, image_field = fields
    if "text" in modality.split(",") and not text:
        why = "missing field" if text_field not in obj else f"empty text for a {modality!r} {kind}"
        raise BenchmarkFormatError(why, file=file, line=line, field=text_field)
    if "image" in modality.split(",") and image is None:
        why = "missing field" if image_field not in obj else f"no image path for a {modality!r} {kind}"
        raise BenchmarkFormatError(why, file=file, line=line, field=image_field)
    check_image(image, image_root=image_root, mode=check_images, file=file, line=line, field=image_field)


def _candidate_row(obj: dict, *, file: Path, line: int, image_root, check_images, format_text: bool) -> tuple[dict, int]:
    did = required_str(obj, "did", file=file, line=line)
    key = parse_id(did, bound=CAND_BOUND, field="did", file=file, line=line)
    if "modality" not in obj:
        raise BenchmarkFormatError("missing field", file=file, line=line, field="modality")
    modality = check_modality(obj["modality"], field="modality", file=file, line=line)
    text = optional_str(obj, "txt", file=file, line=line)
    image = optional_str(obj, "img_path", file=file, line=line)
    formatted = format_string(text) if format_text else (text or "").strip()
    # UniIR embeds an image whenever img_path is set, whatever the declared modality.
    _check_halves(obj, modality, formatted, image, ("txt", "img_path"), "candidate", file=file, line=line,
                  image_root=image_root, check_images=check_images)
    row = {"id": did, "text": formatted or None, "image": image, "modality": _present_modality(formatted, image),
           "source_modality": modality}
    return row, key


#: Candidate ids below this are tracked in a bitmap (12.5 MB) to find duplicates without a set of 5.6M ints.
_BITMAP_KEYS = 100_000_000
#: Pool columns: the common item columns plus the modality the file declares (UniIR keys instructions on it).
POOL_FEATURES = hfds.Features({**ITEM_FEATURES, "source_modality": hfds.Value("string")})


def _pool_rows(skips: SkipReport, *, path: str, image_root, check_images, format_text: bool) -> Iterator[dict]:
    """The rows of a candidate pool file, for `cached_dataset`; a repeated did is skipped (UniIR asserts unique
    ids) and reported with the line of its first occurrence."""
    path_ = Path(path)
    seen = np.zeros(_BITMAP_KEYS // 8 + 1, dtype=np.uint8)
    seen_large: set[int] = set()
    repeats: list[tuple[int, str, int]] = []
    for number, obj in tqdm(iter_jsonl(path_, skips), desc=f"M-BEIR {path_.name}", unit=" rows", disable=None):
        try:
            row, key = _candidate_row(obj, file=path_, line=number, image_root=image_root,
                                      check_images=check_images, format_text=format_text)
        except BenchmarkFormatError as err:
            skips.handle(err)
            continue
        if key < _BITMAP_KEYS:
            byte, bit = key >> 3, 1 << (key & 7)
            if seen[byte] & bit:
                repeats.append((key, row["id"], number))
                continue
            seen[byte] |= bit
        elif key in seen_large:
            repeats.append((key, row["id"], number))
            continue
        else:
            seen_large.add(key)
        yield row
    if repeats:
        first = _first_lines(path_, {key for key, _, _ in repeats})
        for key, did, number in repeats:
            skips.handle(BenchmarkFormatError(f"duplicate did {did!r} (first at line {first.get(key)})",
                                              file=path_, line=number, field="did"))


def _first_lines(path: Path, keys: set[int]) -> dict[int, int]:
    """The first line of each candidate id in ``keys`` (a second pass, only when duplicates were found)."""
    first: dict[int, int] = {}
    for number, obj in iter_jsonl(path, SkipReport("skip")):
        did = obj.get("did") if isinstance(obj, dict) else None
        try:
            key = parse_id(did, bound=CAND_BOUND, field="did", file=path, line=number) if isinstance(did, str) else -1
        except BenchmarkFormatError:
            continue
        if key in keys and key not in first:
            first[key] = number
    return first


def load_pool(path: Path, *, image_root, check_images, format_text: bool, skips: SkipReport, cache_dir) -> hfds.Dataset:
    key = {
        "kind": "mbeir_pool",
        "image_root": None if image_root is None else str(Path(image_root).resolve()),
        "check_images": check_images,
        "format_text": format_text,
    }
    rows_kwargs = {"path": str(path), "image_root": image_root, "check_images": check_images, "format_text": format_text}
    return cached_dataset(path, features=POOL_FEATURES, rows=_pool_rows, rows_kwargs=rows_kwargs, key=key,
                          skips=skips, cache_dir=cache_dir)


def _pick_prompt(prompts: list[str], qid: str, mode: str, seed: int) -> str:
    if mode == "first":
        return prompts[0]
    return random.Random(f"{seed}:{qid}").choice(prompts)


def load_queries(
    files: MBEIRTaskFiles,
    qrels: dict[str, set[str]],
    corpus: hfds.Dataset,
    *,
    image_root,
    check_images,
    format_text: bool,
    instructions: dict | None,
    instruction_mode: str,
    seed: int,
    skips: SkipReport,
) -> hfds.Dataset:
    """The task's queries; with ``instructions`` each text gets its prompt, keyed as UniIR keys it: (dataset id
    of the qid, the query's modality, the modality of its positive candidate — the first of ``pos_cand_list``
    from the query's own dataset, looked up in ``corpus``)."""
    path = files.queries
    parsed: list[tuple[int, dict[str, Any], str | None]] = []  # (line, row, raw text)
    positives: dict[int, str] = {}
    seen: set[str] = set()
    for number, obj in iter_jsonl(path, skips):
        try:
            row, text = _query_row(obj, files, qrels, path=path, line=number, image_root=image_root,
                                   check_images=check_images, format_text=format_text)
            if row["id"] in seen:
                raise BenchmarkFormatError(f"duplicate qid {row['id']!r}", file=path, line=number, field="qid")
            if instructions is not None:
                positives[number] = _first_positive(obj, row["id"], path=path, line=number)
        except BenchmarkFormatError as err:
            skips.handle(err)
            continue
        seen.add(row["id"])
        parsed.append((number, row, text))
    if instructions is not None:
        query_modality = MBEIR_TASK_MODALITIES[files.task_id][0]  # what every query of the file declares
        declared = _source_modalities(corpus, set(positives.values()))
        kept = []
        for number, row, text in parsed:
            try:
                row["text"] = _instructed_text(row, text, query_modality, declared.get(positives[number]),
                                               positives[number], instructions, instruction_mode, seed, format_text,
                                               path=path, line=number) or None
            except BenchmarkFormatError as err:
                skips.handle(err)
                continue
            row["modality"] = _present_modality(row["text"], row["image"])
            kept.append((number, row, text))
        parsed = kept
    return rows_dataset([row for _, row, _ in parsed], ITEM_FEATURES)


def _query_row(obj: dict, files: MBEIRTaskFiles, qrels: dict[str, set[str]], *, path: Path, line: int, image_root,
               check_images, format_text: bool) -> tuple[dict[str, Any], str | None]:
    query_modality, cand_modality = MBEIR_TASK_MODALITIES[files.task_id]
    qid = required_str(obj, "qid", file=path, line=line)
    parse_id(qid, bound=QUERY_BOUND, field="qid", file=path, line=line)
    if "query_modality" not in obj:
        raise BenchmarkFormatError("missing field", file=path, line=line, field="query_modality")
    modality = check_modality(obj["query_modality"], field="query_modality", file=path, line=line)
    if modality != query_modality:
        raise BenchmarkFormatError(
            f"query modality {modality!r} does not match task {files.task_id} ({query_modality} -> {cand_modality})",
            file=path, line=line, field="query_modality",
        )
    task_id = obj.get("task_id")
    if task_id is not None and str(task_id) != str(files.task_id):
        raise BenchmarkFormatError(f"task_id {task_id!r} does not match the file's task {files.task_id}",
                                   file=path, line=line, field="task_id")
    text = optional_str(obj, "query_txt", file=path, line=line)
    image = optional_str(obj, "query_img_path", file=path, line=line)
    _check_halves(obj, modality, format_string(text), image, ("query_txt", "query_img_path"), "query", file=path,
                  line=line, image_root=image_root, check_images=check_images)
    if qid not in qrels:
        raise BenchmarkFormatError(f"qid {qid!r} has no relevant candidate (relevance > 0) in {files.qrels}",
                                   file=path, line=line, field="qid")
    formatted = format_string(text) if format_text else (text or "").strip()
    row = {"id": qid, "text": formatted or None, "image": image, "modality": _present_modality(formatted, image)}
    return row, text


def _first_positive(obj: dict, qid: str, *, path: Path, line: int) -> str:
    """UniIR's positive for the instruction key (evaluation mode): the first of ``pos_cand_list`` whose dataset id
    is the query's (OVEN and InfoSeek queries also list positives of the other dataset)."""
    positives = obj.get("pos_cand_list")
    if not isinstance(positives, list) or not all(isinstance(d, str) for d in positives):
        raise BenchmarkFormatError(f"expected a list of candidate ids, got {positives!r}", file=path, line=line,
                                   field="pos_cand_list")
    dataset_id = qid.split(":")[0].strip()
    own = [d for d in positives if d.split(":")[0].strip() == dataset_id]
    if not own:
        raise BenchmarkFormatError(f"no positive candidate from dataset {dataset_id} (the instruction is keyed on "
                                   "its modality)", file=path, line=line, field="pos_cand_list")
    return own[0]


def _source_modalities(corpus: hfds.Dataset, dids: set[str]) -> dict[str, str]:
    """did → the modality its pool file declares, for ``dids`` (one Arrow ``is_in`` over the id column)."""
    if not dids:
        return {}
    table = corpus.data
    ids = table.column("id")
    mask = pc.is_in(ids, value_set=pa.array(sorted(dids), type=pa.string()))
    column = "source_modality" if "source_modality" in corpus.column_names else "modality"
    return dict(zip(pc.filter(ids, mask).to_pylist(), pc.filter(table.column(column), mask).to_pylist()))


def _instructed_text(row: dict[str, Any], text: str | None, query_modality: str, positive_modality: str | None,
                     positive: str, instructions: dict, mode: str, seed: int, format_text: bool, *, path: Path,
                     line: int) -> str:
    qid = row["id"]
    if positive_modality is None:
        raise BenchmarkFormatError(f"positive candidate {positive!r} is not in the candidate pool (the instruction "
                                   "is keyed on its modality)", file=path, line=line, field="pos_cand_list")
    key = (str(int(qid.split(":")[0])), query_modality, positive_modality)
    prompts = instructions.get(key)
    if not prompts:
        raise BenchmarkFormatError(
            f"no instruction for dataset_id {key[0]}, query modality {key[1]!r}, candidate modality {key[2]!r} "
            "in instructions/query_instructions.tsv", file=path, line=line, field="qid")
    prompt = _pick_prompt(prompts, qid, mode, seed)
    if format_text:
        return format_string(f"{format_string(prompt)} {text or ''}")
    return f"{prompt.strip()} {(text or '').strip()}".strip()
