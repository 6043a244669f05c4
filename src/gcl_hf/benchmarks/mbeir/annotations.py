"""M-BEIR's relevance judgements (``qrels/``) and query instructions (``instructions/query_instructions.tsv``)."""

from __future__ import annotations

import os
from pathlib import Path

from gcl_hf.benchmarks._io import iter_text_lines
from gcl_hf.benchmarks.errors import BenchmarkFormatError, BenchmarkNotFoundError, SkipReport
from gcl_hf.benchmarks.mbeir.files import CAND_BOUND, QUERY_BOUND, parse_id


def load_qrels(path: str | os.PathLike, *, task_id: int | None = None, skips: SkipReport | None = None) -> dict[str, set[str]]:
    """UniIR qrels: lines ``qid 0 did relevance task_id``; keeps relevance > 0 (``load_qrel``).

    ``task_id`` (when given) must match each line's last field; ids must be UniIR's ``"dataset_id:number"``, so a
    qrels file whose ids cannot match the queries is blamed here, not on the query file. A line that is not UTF-8
    or not five fields goes to ``skips``; a file without any relevant pair is an error.
    """
    path = Path(path)
    skips = skips if skips is not None else SkipReport("raise")
    if not path.is_file():
        raise BenchmarkNotFoundError(f"M-BEIR qrels file not found: {path}")
    qrels: dict[str, set[str]] = {}
    for number, text, error in iter_text_lines(path):
        if error is not None:
            skips.handle(error)
            continue
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
            parse_id(qid, bound=QUERY_BOUND, field="qid", file=path, line=number)
            parse_id(did, bound=CAND_BOUND, field="did", file=path, line=number)
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
    if not qrels:
        raise BenchmarkFormatError("no relevance judgement with relevance > 0 (every query would be unanswerable)",
                                   file=path)
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
    for number, text, error in iter_text_lines(path):
        if number == 1:  # the header
            continue
        if error is not None:
            skips.handle(error)
            continue
        if not text.strip():
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
