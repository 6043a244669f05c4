"""M-BEIR (UniIR, Wei et al. 2023) as :class:`RetrievalTask` s: one per dataset x task file.

Semantics follow TIGER-AI-Lab/UniIR:

- ``src/data/mbeir_data_generator.py``: file names (``query/{split}/mbeir_{dataset}_task{id}_{split}.jsonl``,
  ``qrels/{split}/mbeir_{dataset}_task{id}_{split}_qrels.txt`` with lines ``qid 0 did 1 task_id``,
  ``cand_pool/local/mbeir_{dataset}_task{id}_cand_pool.jsonl`` -- only MSCOCO's pools carry the split,
  ``mbeir_mscoco_task0_test_cand_pool.jsonl`` -- and ``cand_pool/global/mbeir_union_{split}_cand_pool.jsonl``).
- ``src/data/preprocessing/utils.py``: task ids (``MBEIR_TASK``), dataset ids, ``format_string`` (the
  text normalisation applied to every query and candidate text), ``hash_qid``/``hash_did`` (ids are
  ``"dataset_id:number"``).
- ``src/data/mbeir_dataset.py``: query fields (``qid``, ``query_txt``, ``query_img_path``,
  ``query_modality``), candidate fields (``did``, ``txt``, ``img_path``, ``modality``); an image is
  embedded whenever its path is set and a text whenever it is non-empty (so the embedded modality
  follows what is present); instructions are keyed by (dataset id from the qid, query modality,
  positive-candidate modality) from ``instructions/query_instructions.tsv`` (columns query_modality,
  cand_modality, dataset name, dataset_id, prompt_1..; header skipped) and the query text becomes
  ``format_string(f"{format_string(prompt)} {query_txt}")``. UniIR draws the prompt with
  ``random.choice`` (seeded run-wide); here the draw is seeded per qid so it is reproducible.
- ``src/common/mbeir_retriever.py``: ``load_qrel`` keeps lines with relevance > 0;
  ``compute_recall_at_k`` scores a query 1 when *any* relevant candidate is in its top k, else 0,
  averaged over the queries; the union (global) pool is searched whole -- no filtering of
  candidates by modality or dataset, the instructions steer the modality.
- ``src/models/uniir_clip/clip_scorefusion/configs_scripts/large/eval/inbatch/retrieval.yaml``:
  Recall@1/5/10 for every task except FashionIQ and Fashion200K, which report Recall@10/20/50
  (headline: 10 for those, 5 for the rest).
"""

from __future__ import annotations

import logging
import os
import random
import re
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets as hfds
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from gcl_hf.benchmarks._io import (
    ITEM_FEATURES,
    RowWriter,
    cached_dataset,
    check_image,
    check_modality,
    iter_jsonl,
    optional_str,
    required_str,
    resolve_root,
    validate_check_images,
)
from gcl_hf.benchmarks.errors import BenchmarkFormatError, BenchmarkNotFoundError, SkipReport
from gcl_hf.benchmarks.task import RetrievalTask

__all__ = [
    "MBEIR_DATASET_IDS",
    "MBEIR_REPO",
    "MBEIR_TASK_MODALITIES",
    "MBEIR_TASK_ORDER",
    "MBEIRTaskFiles",
    "discover_mbeir_tasks",
    "format_string",
    "load_instructions",
    "load_mbeir",
    "load_qrels",
    "mbeir_recall_k",
]

logger = logging.getLogger(__name__)

#: The M-BEIR dataset repo on the Hugging Face Hub.
MBEIR_REPO = "TIGER-Lab/M-BEIR"

#: UniIR's task ids -> (query modality, candidate modality). Task 5 (i -> (t,i)) is unused.
MBEIR_TASK_MODALITIES: dict[int, tuple[str, str]] = {
    0: ("text", "image"),
    1: ("text", "text"),
    2: ("text", "image,text"),
    3: ("image", "text"),
    4: ("image", "image"),
    6: ("image,text", "text"),
    7: ("image,text", "image"),
    8: ("image,text", "image,text"),
}

#: UniIR's dataset ids (the ``d`` of ``qid``/``did`` = ``"d:n"``), by lower-case file name.
MBEIR_DATASET_IDS: dict[str, int] = {
    "visualnews": 0,
    "fashion200k": 1,
    "webqa": 2,
    "edis": 3,
    "nights": 4,
    "oven": 5,
    "infoseek": 6,
    "fashioniq": 7,
    "cirr": 8,
    "mscoco": 9,
}

#: The 16 test tasks in UniIR's report order (mbeir_retriever.py ``dataset_order``).
MBEIR_TASK_ORDER = (
    "visualnews_task0",
    "mscoco_task0",
    "fashion200k_task0",
    "webqa_task1",
    "edis_task2",
    "webqa_task2",
    "visualnews_task3",
    "mscoco_task3",
    "fashion200k_task3",
    "nights_task4",
    "oven_task6",
    "infoseek_task6",
    "fashioniq_task7",
    "cirr_task7",
    "oven_task8",
    "infoseek_task8",
)

_FASHION = ("fashioniq", "fashion200k")
# UniIR hash_qid / hash_did bounds: the number part of an id must stay below these.
_QUERY_BOUND = 500_000
_CAND_BOUND = 10_000_000
_ID = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def mbeir_recall_k(dataset: str) -> tuple[tuple[int, ...], int]:
    """``(k values, headline k)`` UniIR reports for ``dataset``: Recall@10/20/50 (10) for fashion, else 1/5/10 (5)."""
    return ((10, 20, 50), 10) if dataset.lower() in _FASHION else ((1, 5, 10), 5)


def format_string(text: str | None) -> str:
    """UniIR's text normalisation: drop ``\\r``, strip spaces and double quotes, capitalise, end with ``.``/``?``/``!``."""
    text = (text or "").replace("\r", "").strip().strip('"')
    if text:
        text = text[0].upper() + text[1:]
        if text[-1] not in ".?!":
            text += "."
    return text


def _parse_id(value: str, *, bound: int, field: str, file: Any, line: int | None) -> int:
    """UniIR's ``hash_qid``/``hash_did`` of ``"d:n"`` (``d * bound + n``); an error for other shapes."""
    match = _ID.match(value)
    if match is None or int(match.group(2)) >= bound:
        raise BenchmarkFormatError(
            f"malformed id {value!r} (UniIR ids are 'dataset_id:number', number < {bound})",
            file=file,
            line=line,
            field=field,
        )
    return int(match.group(1)) * bound + int(match.group(2))


@dataclass(frozen=True)
class MBEIRTaskFiles:
    """The files of one M-BEIR dataset x task at one split."""

    dataset: str
    task_id: int
    split: str
    queries: Path
    qrels: Path
    local_pool: Path | None

    @property
    def name(self) -> str:
        """UniIR's name of the pair, e.g. ``mscoco_task0``."""
        return f"{self.dataset}_task{self.task_id}"


def _order_key(files: MBEIRTaskFiles) -> tuple:
    name = files.name
    rank = MBEIR_TASK_ORDER.index(name) if name in MBEIR_TASK_ORDER else len(MBEIR_TASK_ORDER)
    return (files.task_id, rank, name)


def _local_pool_candidates(root: Path, name: str, split: str) -> list[Path]:
    local = root / "cand_pool" / "local"
    return [local / f"mbeir_{name}_{split}_cand_pool.jsonl", local / f"mbeir_{name}_cand_pool.jsonl"]


def _matches(files_name: str, dataset: str, wanted: set[str]) -> bool:
    return files_name in wanted or dataset in wanted


def discover_mbeir_tasks(
    root: str | os.PathLike, split: str = "test", datasets: list[str] | tuple[str, ...] | None = None
) -> list[MBEIRTaskFiles]:
    """The dataset x task pairs present under ``root`` (from ``query/{split}/mbeir_*_task*_{split}.jsonl``).

    ``datasets`` keeps only the listed names, either a dataset (``"mscoco"``) or a pair
    (``"mscoco_task0"``), case-insensitive. Sorted in UniIR's report order.
    """
    root = Path(root)
    query_dir = root / "query" / split
    pattern = re.compile(rf"^mbeir_(?P<dataset>.+?)_task(?P<task>\d+)_{re.escape(split)}\.jsonl$")
    found: list[MBEIRTaskFiles] = []
    for path in sorted(query_dir.glob(f"mbeir_*_task*_{split}.jsonl")):
        match = pattern.match(path.name)
        if match is None:
            continue
        dataset, task_id = match.group("dataset").lower(), int(match.group("task"))
        if task_id not in MBEIR_TASK_MODALITIES:
            raise BenchmarkFormatError(
                f"unknown M-BEIR task id {task_id} in the file name (known: {sorted(MBEIR_TASK_MODALITIES)})",
                file=path,
                field="task_id",
            )
        name = f"{dataset}_task{task_id}"
        local = next((p for p in _local_pool_candidates(root, name, split) if p.is_file()), None)
        qrels = root / "qrels" / split / f"mbeir_{name}_{split}_qrels.txt"
        found.append(MBEIRTaskFiles(dataset, task_id, split, path, qrels, local))
    if datasets is not None:
        wanted = {str(d).lower() for d in datasets}
        known = {f.name for f in found} | {f.dataset for f in found}
        unknown = sorted(wanted - known)
        if unknown:
            raise ValueError(
                f"M-BEIR: {unknown} not found under {query_dir} (available: {sorted(f.name for f in found)})"
            )
        found = [f for f in found if _matches(f.name, f.dataset, wanted)]
    if not found:
        raise BenchmarkNotFoundError(f"M-BEIR: no query files query/{split}/mbeir_*_task*_{split}.jsonl under {root}")
    return sorted(found, key=_order_key)


def load_qrels(path: str | os.PathLike, *, task_id: int | None = None, skips: SkipReport | None = None) -> dict[str, set[str]]:
    """UniIR qrels: lines ``qid 0 did relevance task_id``; keeps relevance > 0 (``load_qrel``).

    ``task_id`` (when given) must match each line's last field.
    """
    path = Path(path)
    skips = skips if skips is not None else SkipReport("raise")
    if not path.is_file():
        raise BenchmarkNotFoundError(f"M-BEIR qrels file not found: {path}")
    qrels: dict[str, set[str]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            parts = text.split()
            if not parts:
                continue
            try:
                if len(parts) != 5:
                    raise BenchmarkFormatError(
                        f"expected 5 fields 'qid 0 did relevance task_id', got {len(parts)}: {text.strip()!r}",
                        file=path,
                        line=number,
                        field="qid 0 did relevance task_id",
                    )
                qid, _, did, relevance, line_task = parts
                try:
                    score = int(relevance)
                except ValueError:
                    raise BenchmarkFormatError(
                        f"relevance {relevance!r} is not an integer", file=path, line=number, field="relevance"
                    ) from None
                if task_id is not None and line_task != str(task_id):
                    raise BenchmarkFormatError(
                        f"task_id {line_task!r} does not match the file's task {task_id}",
                        file=path,
                        line=number,
                        field="task_id",
                    )
            except BenchmarkFormatError as err:
                skips.handle(err)
                continue
            if score > 0:
                qrels.setdefault(qid, set()).add(did)
    return qrels


def load_instructions(path: str | os.PathLike, *, skips: SkipReport | None = None) -> dict[tuple[str, str, str], list[str]]:
    """UniIR's ``query_instructions.tsv`` as ``{(dataset_id, query_modality, cand_modality): [prompts]}``.

    Columns by position, as ``MBEIRDatasetBase._load_query_instructions`` reads them: 0 query
    modality, 1 candidate modality, 2 dataset name, 3 dataset id, 4.. prompts (empty ones dropped);
    the first line is a header.
    """
    path = Path(path)
    skips = skips if skips is not None else SkipReport("raise")
    if not path.is_file():
        raise BenchmarkNotFoundError(f"M-BEIR instructions file not found: {path}")
    table: dict[tuple[str, str, str], list[str]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if number == 1 or not text.strip():
                continue
            parts = text.strip().split("\t")
            try:
                if len(parts) < 5:
                    raise BenchmarkFormatError(
                        f"expected at least 5 tab-separated columns (query_modality, cand_modality, dataset, "
                        f"dataset_id, prompt_1, ...), got {len(parts)}",
                        file=path,
                        line=number,
                        field="prompt_1",
                    )
                prompts = [p for p in parts[4:] if p.strip()]
                if not prompts:
                    raise BenchmarkFormatError("no non-empty prompt", file=path, line=number, field="prompt_1")
                dataset_id = parts[3].strip()
                if not dataset_id.isdigit():
                    raise BenchmarkFormatError(
                        f"dataset_id {dataset_id!r} is not an integer", file=path, line=number, field="dataset_id"
                    )
            except BenchmarkFormatError as err:
                skips.handle(err)
                continue
            table[(str(int(dataset_id)), parts[0].strip(), parts[1].strip())] = prompts
    return table


def _present_modality(text: str | None, image: str | None) -> str:
    """The modality UniIR embeds: image when a path is set, text when non-empty, both fused."""
    if image is not None and text:
        return "image,text"
    return "image" if image is not None else "text"


def _candidate_row(obj: dict, *, file: Path, line: int, image_root, check_images, format_text: bool) -> tuple[dict, int]:
    did = required_str(obj, "did", file=file, line=line)
    key = _parse_id(did, bound=_CAND_BOUND, field="did", file=file, line=line)
    if "modality" not in obj:
        raise BenchmarkFormatError("missing field", file=file, line=line, field="modality")
    modality = check_modality(obj["modality"], field="modality", file=file, line=line)
    text = optional_str(obj, "txt", file=file, line=line)
    image = optional_str(obj, "img_path", file=file, line=line)
    formatted = format_string(text) if format_text else (text or "").strip()
    if "text" in modality.split(",") and not formatted:
        why = "missing field" if "txt" not in obj else f"empty text for a {modality!r} candidate"
        raise BenchmarkFormatError(why, file=file, line=line, field="txt")
    if "image" in modality.split(",") and image is None:
        why = "missing field" if "img_path" not in obj else f"no image path for a {modality!r} candidate"
        raise BenchmarkFormatError(why, file=file, line=line, field="img_path")
    # UniIR embeds an image whenever img_path is set, whatever the declared modality.
    check_image(image, image_root=image_root, mode=check_images, file=file, line=line, field="img_path")
    row = {"id": did, "text": formatted or None, "image": image, "modality": _present_modality(formatted, image)}
    return row, key


def _pool_builder(path: Path, *, image_root, check_images, format_text: bool):
    """``build(writer, skips)`` for :func:`cached_dataset`: streams a candidate pool, rejects duplicate dids."""

    def build(writer: RowWriter, skips: SkipReport) -> np.ndarray | None:
        keys, lines = array("q"), array("q")
        rows = tqdm(iter_jsonl(path, skips), desc=f"M-BEIR {path.name}", unit=" rows", disable=None)
        for number, obj in rows:
            try:
                row, key = _candidate_row(
                    obj, file=path, line=number, image_root=image_root, check_images=check_images, format_text=format_text
                )
            except BenchmarkFormatError as err:
                skips.handle(err)
                continue
            writer.add(row)
            keys.append(key)
            lines.append(number)
        if not keys:
            return None
        # Duplicate dids (UniIR asserts unique ids): detect on the int64 hashes, report by line.
        hashed = np.frombuffer(keys, dtype=np.int64)
        order = np.argsort(hashed, kind="stable")
        ordered = hashed[order]
        repeat = np.zeros(len(ordered), dtype=bool)
        repeat[1:] = ordered[1:] == ordered[:-1]
        if not repeat.any():
            return None
        first_of = {}
        for position in range(len(ordered)):
            if not repeat[position]:
                first_of[int(ordered[position])] = int(order[position])
        keep = np.ones(len(hashed), dtype=bool)
        for position in np.sort(order[repeat]):
            value = int(hashed[position])
            did = f"{value // _CAND_BOUND}:{value % _CAND_BOUND}"
            first_line = int(lines[first_of[value]])
            skips.handle(
                BenchmarkFormatError(
                    f"duplicate did {did!r} (first at line {first_line})", file=path, line=int(lines[position]), field="did"
                )
            )
            keep[position] = False
        return keep

    return build


def _load_pool(path: Path, *, image_root, check_images, format_text: bool, skips: SkipReport, cache_dir) -> hfds.Dataset:
    build = _pool_builder(path, image_root=image_root, check_images=check_images, format_text=format_text)
    key = {
        "kind": "mbeir_pool",
        "image_root": None if image_root is None else str(Path(image_root).resolve()),
        "check_images": check_images,
        "format_text": format_text,
    }
    return cached_dataset(path, features=ITEM_FEATURES, build=build, key=key, skips=skips, cache_dir=cache_dir)


def _pick_prompt(prompts: list[str], qid: str, mode: str, seed: int) -> str:
    if mode == "first":
        return prompts[0]
    return random.Random(f"{seed}:{qid}").choice(prompts)


def _load_queries(
    files: MBEIRTaskFiles,
    qrels: dict[str, set[str]],
    *,
    image_root,
    check_images,
    format_text: bool,
    instructions: dict | None,
    instruction_mode: str,
    seed: int,
    skips: SkipReport,
) -> hfds.Dataset:
    path = files.queries
    query_modality, cand_modality = MBEIR_TASK_MODALITIES[files.task_id]
    writer = RowWriter(ITEM_FEATURES)
    seen: set[str] = set()
    for number, obj in iter_jsonl(path, skips):
        try:
            qid = required_str(obj, "qid", file=path, line=number)
            _parse_id(qid, bound=_QUERY_BOUND, field="qid", file=path, line=number)
            if qid in seen:
                raise BenchmarkFormatError(f"duplicate qid {qid!r}", file=path, line=number, field="qid")
            if "query_modality" not in obj:
                raise BenchmarkFormatError("missing field", file=path, line=number, field="query_modality")
            modality = check_modality(obj["query_modality"], field="query_modality", file=path, line=number)
            if modality != query_modality:
                raise BenchmarkFormatError(
                    f"query modality {modality!r} does not match task {files.task_id} "
                    f"({query_modality} -> {cand_modality})",
                    file=path,
                    line=number,
                    field="query_modality",
                )
            task_id = obj.get("task_id")
            if task_id is not None and str(task_id) != str(files.task_id):
                raise BenchmarkFormatError(
                    f"task_id {task_id!r} does not match the file's task {files.task_id}",
                    file=path,
                    line=number,
                    field="task_id",
                )
            text = optional_str(obj, "query_txt", file=path, line=number)
            image = optional_str(obj, "query_img_path", file=path, line=number)
            if "text" in modality.split(",") and not format_string(text):
                why = "missing field" if "query_txt" not in obj else f"empty text for a {modality!r} query"
                raise BenchmarkFormatError(why, file=path, line=number, field="query_txt")
            if "image" in modality.split(",") and image is None:
                why = "missing field" if "query_img_path" not in obj else f"no image path for a {modality!r} query"
                raise BenchmarkFormatError(why, file=path, line=number, field="query_img_path")
            check_image(image, image_root=image_root, mode=check_images, file=path, line=number, field="query_img_path")
            if qid not in qrels:
                raise BenchmarkFormatError(
                    f"qid {qid!r} has no relevant candidate (relevance > 0) in {files.qrels}",
                    file=path,
                    line=number,
                    field="qid",
                )
            formatted = format_string(text) if format_text else (text or "").strip()
            if instructions is not None:
                dataset_id = qid.split(":")[0].strip()
                key = (str(int(dataset_id)), modality, cand_modality)
                prompts = instructions.get(key)
                if not prompts:
                    raise BenchmarkFormatError(
                        f"no instruction for dataset_id {key[0]}, query modality {key[1]!r}, candidate modality "
                        f"{key[2]!r} in instructions/query_instructions.tsv",
                        file=path,
                        line=number,
                        field="qid",
                    )
                prompt = _pick_prompt(prompts, qid, instruction_mode, seed)
                if format_text:
                    formatted = format_string(f"{format_string(prompt)} {text or ''}")
                else:
                    formatted = f"{prompt.strip()} {(text or '').strip()}".strip()
        except BenchmarkFormatError as err:
            skips.handle(err)
            continue
        seen.add(qid)
        writer.add({"id": qid, "text": formatted or None, "image": image, "modality": _present_modality(formatted, image)})
    return writer.finish()


def _qrels_in_corpus(corpus: hfds.Dataset, qrels: dict[str, set[str]]) -> set[str]:
    """The qrels dids present in ``corpus`` (an Arrow ``is_in`` over the id column)."""
    wanted = sorted({did for dids in qrels.values() for did in dids})
    if not wanted:
        return set()
    ids = corpus.data.column("id")
    mask = pc.is_in(ids, value_set=pa.array(wanted, type=pa.string()))
    return set(pc.filter(ids, mask).to_pylist())


def _check_instruction_mode(instructions: Any) -> str | None:
    if instructions is False or instructions is None:
        return None
    if instructions is True:
        return "random"
    if instructions in ("random", "first"):
        return instructions
    raise ValueError(f"instructions must be False, True, 'random' or 'first', got {instructions!r}")


def _hub_patterns(split: str, datasets: list[str] | None, pool: str, with_instructions: bool) -> list[str]:
    names = [str(d).lower() for d in datasets] if datasets else ["*"]
    patterns: list[str] = []
    for name in names:
        stem = name if "_task" in name else f"{name}_task[0-9]"
        if name == "*":
            stem = "*_task[0-9]"
        patterns += [f"query/{split}/mbeir_{stem}_{split}.jsonl", f"qrels/{split}/mbeir_{stem}_{split}_qrels.txt"]
        if pool == "local":
            patterns += [f"cand_pool/local/mbeir_{stem}_{split}_cand_pool.jsonl", f"cand_pool/local/mbeir_{stem}_cand_pool.jsonl"]
    if pool == "global":
        patterns.append(f"cand_pool/global/mbeir_union_{split}_cand_pool.jsonl")
    if with_instructions:
        patterns.append("instructions/query_instructions.tsv")
    return patterns


def load_mbeir(
    root_or_repo: str | os.PathLike | None = None,
    *,
    split: str = "test",
    datasets: list[str] | tuple[str, ...] | None = None,
    pool: str = "local",
    instructions: bool | str = False,
    instruction_seed: int = 2023,
    format_text: bool = True,
    image_root: str | os.PathLike | None = None,
    check_images: bool | str = True,
    errors: str = "raise",
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> list[RetrievalTask]:
    """Load M-BEIR tasks from a local copy (or the Hub repo ``TIGER-Lab/M-BEIR``).

    Args:
        root_or_repo: the M-BEIR root (holding ``query/``, ``qrels/``, ``cand_pool/``,
            ``instructions/``) or a Hub dataset repo id (default ``TIGER-Lab/M-BEIR``; only the
            needed JSONL/qrels/TSV files are fetched, never the image archives).
        split: ``"test"`` (or ``"val"``).
        datasets: keep only these datasets (``"mscoco"``) or pairs (``"mscoco_task0"``).
        pool: ``"local"`` (each task's own pool, M-BEIR_local) or ``"global"`` (the 5.6M union
            pool, shared by all tasks as one Dataset object; UniIR searches it whole).
        instructions: prefix each query with an instruction from ``query_instructions.tsv``:
            ``True``/``"random"`` (UniIR's random prompt, drawn reproducibly per qid from
            ``instruction_seed``) or ``"first"`` (prompt_1, as pyserini does). Queries that gain a
            text become ``"image,text"`` (UniIR embeds the text whenever it is non-empty).
        format_text: apply UniIR's ``format_string`` to every text (as UniIR does at embedding time).
        image_root: directory the ``img_path``/``query_img_path`` values are relative to
            (default: the M-BEIR root, which holds ``mbeir_images/``).
        check_images: ``True`` checks every image file exists at load time, ``"decode"`` also
            decodes it, ``False`` checks nothing (corrupt files then fail at encoding time).
        errors: ``"raise"`` or ``"skip"`` (drop, count and report malformed records).
        revision: Hub revision when loading from the Hub.
        cache_dir: where parsed candidate pools are cached as Arrow files
            (default ``$HF_DATASETS_CACHE/gcl_hf_benchmarks``).

    Returns one :class:`RetrievalTask` per dataset x task, named ``mbeir_{dataset}_task{id}``
    (``..._union`` for the global pool), metric ``"recall"`` with UniIR's k values.
    """
    if pool not in ("local", "global"):
        raise ValueError(f"pool must be 'local' or 'global', got {pool!r}")
    SkipReport(errors)  # validates the option before any work
    instruction_mode = _check_instruction_mode(instructions)
    check_images = validate_check_images(check_images)
    root, from_hub = resolve_root(
        root_or_repo,
        default_repo=MBEIR_REPO,
        allow_patterns=_hub_patterns(split, list(datasets) if datasets else None, pool, instruction_mode is not None),
        revision=revision,
        what="M-BEIR",
    )
    if image_root is None:
        if from_hub and check_images:
            raise BenchmarkNotFoundError(
                "M-BEIR: the images are not fetched from the Hub (mbeir_images.tar.gz parts); download and extract "
                "them, then pass image_root=<directory holding mbeir_images/> (or check_images=False)"
            )
        image_root = root
    image_root = str(image_root)
    task_files = discover_mbeir_tasks(root, split, datasets)

    instruction_table = None
    instructions_path = root / "instructions" / "query_instructions.tsv"
    instruction_skips = SkipReport(errors)
    if instruction_mode is not None:
        instruction_table = load_instructions(instructions_path, skips=instruction_skips)

    global_corpus = None
    global_skips = SkipReport(errors)
    global_path = root / "cand_pool" / "global" / f"mbeir_union_{split}_cand_pool.jsonl"
    if pool == "global":
        if not global_path.is_file():
            raise BenchmarkNotFoundError(f"M-BEIR: global candidate pool not found: {global_path}")
        global_corpus = _load_pool(
            global_path, image_root=image_root, check_images=check_images, format_text=format_text,
            skips=global_skips, cache_dir=cache_dir,
        )

    tasks: list[RetrievalTask] = []
    for files in task_files:
        skips = SkipReport(errors)
        skips.merge(instruction_skips)
        qrels = load_qrels(files.qrels, task_id=files.task_id, skips=skips)
        if pool == "global":
            corpus, corpus_path = global_corpus, global_path
            skips.merge(global_skips)
        else:
            if files.local_pool is None:
                tried = ", ".join(str(p) for p in _local_pool_candidates(root, files.name, split))
                raise BenchmarkNotFoundError(f"M-BEIR: no local candidate pool for {files.name} (tried {tried})")
            corpus_path = files.local_pool
            corpus = _load_pool(
                corpus_path, image_root=image_root, check_images=check_images, format_text=format_text,
                skips=skips, cache_dir=cache_dir,
            )
        queries = _load_queries(
            files, qrels, image_root=image_root, check_images=check_images, format_text=format_text,
            instructions=instruction_table, instruction_mode=instruction_mode or "random",
            seed=instruction_seed, skips=skips,
        )
        query_ids = set(queries["id"])
        qrels = {qid: dids for qid, dids in qrels.items() if qid in query_ids}
        present = _qrels_in_corpus(corpus, qrels)
        missing_pairs = sum(len(dids - present) for dids in qrels.values())
        unreachable = sum(1 for dids in qrels.values() if not dids & present)
        suffix = "_union" if pool == "global" else ""
        name = f"mbeir_{files.name}{suffix}"
        if unreachable:
            logger.warning(
                "%s: %d of %d queries have none of their relevant candidates in %s; they count as misses, as in UniIR",
                name, unreachable, len(qrels), corpus_path,
            )
        k, headline = mbeir_recall_k(files.dataset)
        query_modality, cand_modality = MBEIR_TASK_MODALITIES[files.task_id]
        skips.log(logger, name)
        tasks.append(
            RetrievalTask(
                name=name,
                queries=queries,
                corpus=corpus,
                qrels=qrels,
                metric="recall",
                k=k,
                image_root=image_root,
                meta={
                    "benchmark": "mbeir",
                    "dataset": files.dataset,
                    "task_id": files.task_id,
                    "task": f"{query_modality} -> {cand_modality}",
                    "query_modality": query_modality,
                    "candidate_modality": cand_modality,
                    "split": split,
                    "pool": pool,
                    "headline_k": headline,
                    "instructions": instruction_mode,
                    "queries_file": str(files.queries),
                    "corpus_file": str(corpus_path),
                    "qrels_file": str(files.qrels),
                    "qrels_not_in_corpus": missing_pairs,
                    "queries_without_relevant_in_corpus": unreachable,
                    "skipped": skips.count,
                    "skip_report": skips.to_dict(),
                },
            )
        )
    return tasks
