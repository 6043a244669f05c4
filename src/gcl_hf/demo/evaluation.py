"""Scoring a demo model: the nine cells in the mixed pool and in local pools, and the modality gap.

:func:`encode_test_pool` embeds the mixed pool and the queries of every modality once per model with the
library's encoder; :func:`score_cells` ranks and scores the nine tasks with the benchmarks' evaluator
(:func:`gcl_hf.retrieval.evaluation.rank_corpus` / :func:`~gcl_hf.retrieval.evaluation.score_rankings`,
which honour ``task.exclude``); :func:`score_local_pools` does the same on single-modality pools from the
same embeddings; :func:`pool_modality_gap` is :func:`gcl_hf.retrieval.analysis.modality_gap` on the
candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gcl_hf.benchmarks.task import MODALITIES, RetrievalTask
from gcl_hf.demo.tasks import MODALITY_LABELS
from gcl_hf.retrieval.analysis import modality_gap
from gcl_hf.retrieval.distributed_encoding import encode_with
from gcl_hf.retrieval.evaluation import rank_corpus, score_rankings
from gcl_hf.retrieval.options import EncodeOptions

__all__ = ["CELLS", "PoolEmbeddings", "encode_test_pool", "pool_modality_gap", "score_cells", "score_local_pools"]

#: The nine cells, row-major: ("image", "image"), ("image", "text"), ..., ("fused", "fused").
CELLS: tuple[tuple[str, str], ...] = tuple(
    (MODALITY_LABELS[q], MODALITY_LABELS[c]) for q in MODALITIES for c in MODALITIES
)


@dataclass
class PoolEmbeddings:
    """Embeddings of the shared mixed pool (row-aligned with ``tasks[0].corpus``) and of the queries of
    each modality (row-aligned with the queries of that modality's tasks)."""

    corpus: torch.Tensor
    queries: dict[str, torch.Tensor]  # modality label ("image", "text", "fused") -> [n, D]
    candidates: dict[str, torch.Tensor]  # modality label -> the pool's rows of that modality, in item order


def encode_test_pool(model: Any, processor: Any, tasks: list[RetrievalTask], *, batch_size: int = 256,
                     progress: bool = True, desc: str = "encode") -> PoolEmbeddings:
    """Embed the shared corpus once and each modality's queries once with
    :func:`gcl_hf.retrieval.distributed_encoding.encode_with` (the encoder of ``evaluate_retrieval``)."""
    from tqdm.auto import tqdm

    corpus = tasks[0].corpus
    if any(task.corpus is not corpus for task in tasks):
        raise ValueError("encode_test_pool expects the tasks to share one corpus (the mixed pool)")
    query_sets = {}
    for task in tasks:
        query_sets.setdefault(MODALITY_LABELS[task.meta["query_modality"]], task.queries)
    total = len(corpus) + sum(len(q) for q in query_sets.values())
    options = EncodeOptions(image_root=tasks[0].image_root, batch_size=batch_size, show_progress=False)
    with tqdm(total=total, desc=desc, unit="item", disable=not progress) as bar:
        corpus_emb = encode_with(model, processor, corpus, options)
        bar.update(len(corpus))
        queries = {}
        for label, dataset in query_sets.items():
            queries[label] = encode_with(model, processor, dataset, options)
            bar.update(len(dataset))
    modality = np.asarray(corpus["modality"], dtype=object)
    candidates = {MODALITY_LABELS[m]: corpus_emb[torch.from_numpy(np.nonzero(modality == m)[0])] for m in MODALITIES}
    return PoolEmbeddings(corpus_emb, queries, candidates)


def _cell(task: RetrievalTask) -> str:
    return task.name.split(":", 1)[1]


def score_cells(tasks: list[RetrievalTask], embeddings: PoolEmbeddings, k: tuple[int, ...] = (1, 5),
                rankings: dict[str, list[list[str]]] | None = None) -> dict[str, dict[str, float]]:
    """``{"image->text": {"recall@1": ..., "recall@5": ...}, ...}`` for the nine mixed-pool tasks, ranked
    by :func:`~gcl_hf.retrieval.evaluation.rank_corpus` (exact top-k, ``task.exclude`` removed) and scored
    by :func:`~gcl_hf.retrieval.evaluation.score_rankings` (the shipped ``recall_at_k`` metric). Pass a
    dict as ``rankings`` to receive each cell's top-``max(k)`` ids per query."""
    out = {}
    for task in tasks:
        label = MODALITY_LABELS[task.meta["query_modality"]]
        ranked = rank_corpus(task, embeddings.queries[label], embeddings.corpus, max(k))
        scores = score_rankings(task, ranked, k)
        out[_cell(task)] = {f"recall@{x}": scores[f"recall@{x}"] for x in k}
        if rankings is not None:
            rankings[_cell(task)] = ranked
    return out


def score_local_pools(local_tasks: list[RetrievalTask], embeddings: PoolEmbeddings,
                      k: tuple[int, ...] = (1, 5)) -> dict[str, dict[str, float]]:
    """Like :func:`score_cells` on the single-modality pools (``pool="local"``): each cell's candidates of
    the target modality only, embedded once in the mixed pool (same rows, same vectors)."""
    out = {}
    for task in local_tasks:
        label = MODALITY_LABELS[task.meta["query_modality"]]
        target = MODALITY_LABELS[task.meta["candidate_modality"]]
        ranked = rank_corpus(task, embeddings.queries[label], embeddings.candidates[target], max(k))
        scores = score_rankings(task, ranked, k)
        out[_cell(task)] = {f"recall@{x}": scores[f"recall@{x}"] for x in k}
    return out


def pool_modality_gap(embeddings: PoolEmbeddings) -> dict[str, dict[str, float]]:
    """:func:`gcl_hf.retrieval.analysis.modality_gap` of the candidates (row n of each modality: item n)."""
    c = embeddings.candidates
    return modality_gap(c["image"], c["text"], c["fused"])
