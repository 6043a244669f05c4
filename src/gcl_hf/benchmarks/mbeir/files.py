"""M-BEIR's vocabulary and file layout: task ids, dataset ids, report order, ids, UniIR's text normalisation,
and which dataset x task files exist under a root (or which to fetch from the Hub)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gcl_hf.benchmarks.errors import BenchmarkFormatError, BenchmarkNotFoundError

MBEIR_REPO = "TIGER-Lab/M-BEIR"

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

QUERY_BOUND = 500_000

CAND_BOUND = 10_000_000

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


def parse_id(value: str, *, bound: int, field: str, file: Any, line: int | None) -> int:
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


def local_pool_candidates(root: Path, name: str, split: str) -> list[Path]:
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
        local = next((p for p in local_pool_candidates(root, name, split) if p.is_file()), None)
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


def hub_patterns(split: str, datasets: list[str] | None, pool: str, with_instructions: bool) -> list[str]:
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
