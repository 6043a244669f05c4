"""`evaluate_retrieval`: score a model on a :class:`~gcl_hf.benchmarks.task.RetrievalTask`.

Queries and corpus are embedded as :class:`~gcl_hf.retrieval.options.EncodeOptions` say
(:func:`~gcl_hf.retrieval.distributed_encoding.encode_with`: in memory, through the on-disk cache, or sharded over the processes
of a launch), every query is ranked
against the whole pool by exact streaming top-k (:func:`~gcl_hf.retrieval.search.exact_topk`, or a faiss
flat index), or against its own candidate list when the task has one (MMEB), with the task's
excluded ids removed (CoVR), and the rankings are scored with the shipped metrics' plain functions
(the same code the `evaluate` modules run, without ``evaluate.load``'s per-call module set-up).
:func:`retrieve` keeps the rankings with their scores, so they can be saved and rescored elsewhere.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gcl_hf.retrieval import metrics as _metrics
from gcl_hf.retrieval.embedding_cache import CorpusEmbeddings
from gcl_hf.retrieval.distributed_encoding import encode_with
from gcl_hf.retrieval.options import EncodeOptions, parse_ks
from gcl_hf.retrieval.search import build_faiss_index, exact_topk, faiss_topk, parse_search_backend

__all__ = ["TaskRankings", "evaluate_retrieval", "headline_metric", "metric_function", "rank_corpus",
           "retrieve", "score_rankings"]

logger = logging.getLogger(__name__)

_RECALL = ("recall", "recall_at_k")
_PRECISION = ("precision_at_1",)
Embeddings = torch.Tensor | np.ndarray | CorpusEmbeddings


def _check_task(task: Any) -> None:
    if len(task.corpus) == 0 or len(task.queries) == 0:  # a metric over nothing is not a metric
        which = "corpus" if len(task.corpus) == 0 else "queries"
        raise ValueError(f"task {task.name!r}: empty {which}; nothing to score")
    if task.metric not in _RECALL + _PRECISION:
        raise ValueError(f"task {task.name!r}: unknown metric {task.metric!r}; expected 'recall' or 'precision_at_1'")
    ids = task.queries["id"]
    missing = [q for q in ids if not task.qrels.get(q)]
    if missing:
        raise ValueError(
            f"task {task.name!r}: query {missing[0]!r} has no relevant corpus id in qrels"
            + (f" ({len(missing)} queries affected)" if len(missing) > 1 else "")
        )


def _corpus_index(task: Any) -> tuple[list[str], dict[str, int]]:
    ids = list(task.corpus["id"])
    index = {cid: i for i, cid in enumerate(ids)}
    if len(index) != len(ids):
        seen: set[str] = set()
        dup = next(c for c in ids if c in seen or seen.add(c))
        raise ValueError(f"task {task.name!r}: corpus id {dup!r} occurs more than once (corpus field 'id')")
    return ids, index


def _as_tensor(x: Embeddings) -> torch.Tensor:
    if isinstance(x, CorpusEmbeddings):
        return x.to_tensor()
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))


def _pool(x: Embeddings) -> torch.Tensor | np.ndarray | list[np.ndarray]:
    return x.shards if isinstance(x, CorpusEmbeddings) else x


def _exclusions(task: Any, query_ids: list[str], index: dict[str, int]) -> dict[int, list[int]] | None:
    if not task.exclude:
        return None
    out = {}
    for n, qid in enumerate(query_ids):
        ids = task.exclude.get(qid)
        if ids:
            out[n] = sorted(index[c] for c in ids if c in index)
    return out


def _rank_candidates(task: Any, query_ids: list[str], queries: torch.Tensor, corpus: torch.Tensor,
                     index: dict[str, int], corpus_ids: list[str], depth: int,
                     exclude: dict[int, list[int]] | None,
                     block_elements: int = 1 << 25) -> tuple[list[list[str]], list[list[float]]]:
    """Rank each query's own candidate list; equal scores keep the list's order (MMEB's argmax
    picks the first maximum, and its lists put the positive first)."""
    lists: list[list[int]] = []
    for n, qid in enumerate(query_ids):
        cands = task.candidates.get(qid)
        if not cands:
            raise ValueError(f"task {task.name!r}: query {qid!r} has no candidate list (task.candidates)")
        unknown = [c for c in cands if c not in index]
        if unknown:
            raise ValueError(f"task {task.name!r}: candidate {unknown[0]!r} of query {qid!r} is not in the corpus")
        drop = set(exclude.get(n, ())) if exclude else set()
        lists.append([j for j in dict.fromkeys(index[c] for c in cands) if j not in drop])
    width = max(1, max((len(c) for c in lists), default=1))
    block = max(1, block_elements // (width * corpus.shape[1]))
    rankings: list[list[str]] = []
    values: list[list[float]] = []
    for start in range(0, len(lists), block):
        chunk = lists[start:start + block]
        idx = torch.full((len(chunk), width), -1, dtype=torch.int64)
        for r, c in enumerate(chunk):
            idx[r, : len(c)] = torch.tensor(c, dtype=torch.int64)
        emb = corpus[idx.clamp(min=0)]  # [B, M, D]
        scores = torch.bmm(emb, queries[start:start + len(chunk)].unsqueeze(2)).squeeze(2)
        scores[idx < 0] = -torch.inf
        sorted_scores, order = torch.sort(scores, dim=1, descending=True, stable=True)
        order, sorted_scores = order[:, :depth], sorted_scores[:, :depth]
        for row, row_scores in zip(idx.gather(1, order).tolist(), sorted_scores.tolist()):
            rankings.append([corpus_ids[j] for j in row if j >= 0])
            values.append([s for j, s in zip(row, row_scores) if j >= 0])
    return rankings, values


def rank_corpus(
    task: Any,
    query_embeds: Embeddings,
    corpus_embeds: Embeddings,
    depth: int,
    *,
    chunk_size: int | None = None,
    index: str = "exact",
    show_progress: bool = False,
    return_scores: bool = False,
) -> list[list[str]] | tuple[list[list[str]], list[list[float]]]:
    """For every query of ``task`` (in order), the ids of its ``depth`` best corpus items, best first.

    ``query_embeds``/``corpus_embeds`` are row-aligned with ``task.queries``/``task.corpus``. Uses
    ``task.candidates`` when set (each query ranks only its own list) and removes ``task.exclude``d
    ids. ``index`` is ``"exact"`` (streaming :func:`~gcl_hf.retrieval.search.exact_topk`) or ``"faiss"``.
    With ``return_scores`` the result is ``(ids, scores)``, the scores (inner products) aligned with the ids.
    """
    index = parse_search_backend(index)
    query_ids = list(task.queries["id"])
    corpus_ids, id_index = _corpus_index(task)
    queries = _as_tensor(query_embeds).float()
    if queries.shape[0] != len(query_ids):
        raise ValueError(f"{queries.shape[0]} query embeddings for {len(query_ids)} queries of task {task.name!r}")
    n_corpus = corpus_embeds.num_rows if isinstance(corpus_embeds, CorpusEmbeddings) else len(corpus_embeds)
    if n_corpus != len(corpus_ids):
        raise ValueError(f"{n_corpus} corpus embeddings for {len(corpus_ids)} corpus items of task {task.name!r}")
    exclude = _exclusions(task, query_ids, id_index)
    unreachable = [q for q in query_ids if not any(c in id_index for c in task.qrels.get(q, ()))]
    if unreachable:
        logger.warning(
            "task %r: %d of %d queries have no relevant id in the corpus (e.g. %r); they count as misses",
            task.name, len(unreachable), len(query_ids), unreachable[0],
        )
    if task.candidates is not None:
        ranked, values = _rank_candidates(task, query_ids, queries, _as_tensor(corpus_embeds).float(), id_index,
                                          corpus_ids, depth, exclude)
        return (ranked, values) if return_scores else ranked
    if index == "faiss":
        vals, top = faiss_topk(build_faiss_index(_pool(corpus_embeds)), queries, depth, exclude=exclude)
    else:
        vals, top = exact_topk(queries, _pool(corpus_embeds), depth, chunk_size=chunk_size, exclude=exclude,
                               show_progress=show_progress)
    ranked = [[corpus_ids[j] for j in row if j >= 0] for row in top.tolist()]
    if not return_scores:
        return ranked
    values = [[s for j, s in zip(row, srow) if j >= 0] for row, srow in zip(top.tolist(), vals.tolist())]
    return ranked, values


@functools.cache
@functools.lru_cache(maxsize=None)
def metric_function(name: str) -> Callable[..., dict[str, float]]:
    """The plain function of a shipped metric (``recall_at_k`` or ``precision_at_1``): the code its
    `evaluate` module runs, loaded once from the same file, without ``evaluate.load``'s per-call set-up."""
    spec = importlib.util.spec_from_file_location(f"_gcl_hf_metric_{name}", _metrics.module_path(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return getattr(module, name)


def headline_metric(task: Any) -> str:
    """The metric the papers report for ``task``: ``precision@1`` (MMEB) or ``recall@<task.headline_k>``
    (M-BEIR: 5, 10 for FashionIQ and Fashion200K; CoVR: 1)."""
    if task.metric in _PRECISION:
        return "precision@1"
    return f"recall@{task.headline_k}"


def score_rankings(
    task: Any, rankings: Sequence[Sequence[str]], k: Sequence[int] | int | str = (1, 5, 10)
) -> dict[str, float]:
    """The task's metric (``recall@k`` for each k, or ``precision@1``) for per-query rankings, plus
    ``num_queries``; computed by the shipped metrics' plain functions (what their `evaluate` modules run)."""
    query_ids = list(task.queries["id"])
    if len(rankings) != len(query_ids):
        raise ValueError(f"task {task.name!r}: {len(rankings)} rankings for {len(query_ids)} queries")
    references = [sorted(task.qrels[q]) for q in query_ids]
    predictions = [list(r) for r in rankings]
    if task.metric in _PRECISION:
        result = metric_function("precision_at_1")(predictions, references)
    else:
        result = metric_function("recall_at_k")(predictions, references, list(parse_ks(k)))
    return {**{name: float(v) for name, v in result.items()}, "num_queries": len(query_ids)}


@dataclass
class TaskRankings:
    """What :func:`retrieve` found for one task: per query (in ``task.queries`` order) its ranked corpus ids
    and their scores (inner products of the normalised embeddings), best first."""

    task: str
    query_ids: list[str]
    ids: list[list[str]]
    scores: list[list[float]]

    def as_dict(self) -> dict[str, dict[str, float]]:
        """``{query id: {corpus id: score}}``, each inner dict in rank order (the run format of ranx / pytrec_eval)."""
        return {q: dict(zip(i, s)) for q, i, s in zip(self.query_ids, self.ids, self.scores)}


def retrieve(
    model: Any,
    processor: Any,
    task: Any,
    depth: int,
    batch_size: int | None = None,
    *,
    chunk_size: int | None = None,
    index: str = "exact",
    options: EncodeOptions | None = None,
    **encode_options: Any,
) -> TaskRankings:
    """Embed ``task``'s queries and corpus and rank the corpus for each query (top ``depth``, with scores).

    Same encoding and search as :func:`evaluate_retrieval` (which scores these rankings); see there for
    the arguments.
    """
    _check_task(task)
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if batch_size is not None:
        encode_options["batch_size"] = batch_size
    options = EncodeOptions.resolve(options, **encode_options)
    if options.image_root is None:
        options = EncodeOptions.resolve(options, image_root=task.image_root)
    corpus = encode_with(model, processor, task.corpus, options, desc=f"{task.name}: corpus")
    queries = encode_with(model, processor, task.queries, options, desc=f"{task.name}: queries")
    ids, scores = rank_corpus(task, queries, corpus, depth, chunk_size=chunk_size, index=index,
                              show_progress=options.show_progress, return_scores=True)
    return TaskRankings(task.name, list(task.queries["id"]), ids, scores)


def evaluate_retrieval(
    model: Any,
    processor: Any,
    task: Any,
    k: Sequence[int] | int | str = (1, 5, 10),
    batch_size: int | None = None,
    *,
    chunk_size: int | None = None,
    index: str = "exact",
    options: EncodeOptions | None = None,
    **encode_options: Any,
) -> dict[str, float]:
    """Embed ``task``'s queries and corpus with ``model`` and score the retrieval.

    Returns ``{"recall@1": ..., "recall@5": ..., "recall@10": ..., "num_queries": n}`` (UniIR's
    Recall@k: a query counts when any relevant item is in its top k) or, for
    ``task.metric == "precision_at_1"`` (MMEB), ``{"precision@1": ..., "num_queries": n}``.
    ``k``: see :func:`~gcl_hf.retrieval.options.parse_ks`. ``index`` is ``"exact"`` (streaming exact top-k,
    ``chunk_size`` corpus rows at a time) or ``"faiss"`` (a flat inner-product index; same results).
    How queries and corpus are encoded: ``options`` (an :class:`~gcl_hf.retrieval.options.EncodeOptions`), with
    any of its fields also accepted as a keyword (``batch_size``, ``num_workers``, ``device``,
    ``processor_kwargs``, ``show_progress``, ``cache_dir`` (embeddings cached on disk and reused, see
    :func:`~gcl_hf.retrieval.embedding_cache.encode_corpus`), ``distributed``, ...).
    """
    ks = parse_ks(k)
    depth = 1 if task.metric in _PRECISION else max(ks)
    rankings = retrieve(model, processor, task, depth, batch_size, chunk_size=chunk_size, index=index,
                        options=options, **encode_options)
    return score_rankings(task, rankings.ids, ks)
