"""`load_mbeir`: M-BEIR tasks from a local copy or the Hub, local pools or the global pool, with instructions."""

from __future__ import annotations

import logging
import os
from typing import Any

import datasets as hfds
import pyarrow as pa
import pyarrow.compute as pc

from gcl_hf.data.validation import CheckImages, parse_check_images
from gcl_hf.benchmarks._io import ITEM_FEATURES, require_rows, resolve_root
from gcl_hf.benchmarks.errors import BenchmarkNotFoundError, SkipReport
from gcl_hf.benchmarks.mbeir.annotations import load_instructions, load_qrels
from gcl_hf.benchmarks.mbeir.files import MBEIR_REPO, MBEIR_TASK_MODALITIES, hub_patterns, local_pool_candidates, discover_mbeir_tasks, mbeir_recall_k
from gcl_hf.benchmarks.mbeir.items import load_pool, load_queries
from gcl_hf.benchmarks.task import RetrievalTask
from gcl_hf.errors import ErrorMode

logger = logging.getLogger("gcl_hf.benchmarks.mbeir")


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
    check_images: CheckImages | bool = "exists",
    errors: ErrorMode = "raise",
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
        check_images: ``"exists"`` (or ``True``) checks every image file exists at load time, ``"decode"`` also
            decodes it, ``"none"`` (or ``False``) checks nothing (corrupt files then fail at encoding time).
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
    check_images = parse_check_images(check_images)
    root, from_hub = resolve_root(
        root_or_repo,
        default_repo=MBEIR_REPO,
        allow_patterns=hub_patterns(split, list(datasets) if datasets else None, pool, instruction_mode is not None),
        revision=revision,
        what="M-BEIR",
    )
    if image_root is None:
        if from_hub and check_images != "none":
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
        global_corpus = load_pool(
            global_path, image_root=image_root, check_images=check_images, format_text=format_text,
            skips=global_skips, cache_dir=cache_dir,
        )
        require_rows(len(global_corpus), what="candidates", file=global_path, skips=global_skips)

    views: dict[int, hfds.Dataset] = {}

    def shared_view(pool: hfds.Dataset) -> hfds.Dataset:
        """The pool with the common item columns only (one view per pool, so the global pool stays one object)."""
        if id(pool) not in views:
            views[id(pool)] = pool.select_columns(list(ITEM_FEATURES))
        return views[id(pool)]

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
                tried = ", ".join(str(p) for p in local_pool_candidates(root, files.name, split))
                raise BenchmarkNotFoundError(f"M-BEIR: no local candidate pool for {files.name} (tried {tried})")
            corpus_path = files.local_pool
            corpus = load_pool(
                corpus_path, image_root=image_root, check_images=check_images, format_text=format_text,
                skips=skips, cache_dir=cache_dir,
            )
            require_rows(len(corpus), what="candidates", file=corpus_path, skips=skips)
        queries = load_queries(
            files, qrels, corpus, image_root=image_root, check_images=check_images, format_text=format_text,
            instructions=instruction_table, instruction_mode=instruction_mode or "random",
            seed=instruction_seed, skips=skips,
        )
        require_rows(len(queries), what="queries", file=files.queries, skips=skips)
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
                corpus=shared_view(corpus),
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
