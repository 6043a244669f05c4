"""The nine query→candidate retrieval tasks of the demo's test split, judged by content.

Every test item puts three candidates into the pool — its candidate-view image, caption and fused pair —
and asks three queries built from its query view (image, caption, fused). Relevance follows what each
modality can see (:meth:`~gcl_hf.demo.items.DemoItem.content_key`): a candidate of modality M from item j
is relevant to a query of modality Q from item k iff some test item i is indistinguishable from k through
Q (``key_Q(i) == key_Q(k)``) and has j's content through M (``key_M(i) == key_M(j)``). In a 2×2 group
(image-only variants A, A' × text-only variants B, B') this gives, for the query of item (A, B):

=============  ======================================  ==========
query→cand.    relevant candidates                     how many
=============  ======================================  ==========
image→image    the pictures showing A                  2
image→text     every caption of the group              4
image→fused    the fused items with A                  2
text→image     every picture of the group              4
text→text      the captions telling B                  2
text→fused     the fused items with B                  2
fused→image    the pictures showing A                  2
fused→text     the captions telling B                  2
fused→fused    the fused item (A, B) only              1
=============  ======================================  ==========

so fused→fused is the cell that can only be solved by combining picture and caption, and the cells with a
fused side need the fused embedding to keep what only its image or only its text carries.
"""

from __future__ import annotations

import os
from collections import defaultdict

import datasets

from gcl_hf.benchmarks.task import MODALITIES, RetrievalTask

__all__ = ["MODALITY_LABELS", "build_retrieval_tasks", "candidate_id", "query_id", "relevant_items"]

#: Short labels for the modalities in task names: image, text, fused.
MODALITY_LABELS: dict[str, str] = {"image": "image", "text": "text", "image,text": "fused"}
_KEY_COLUMNS: dict[str, str] = {"image": "image_key", "text": "text_key", "image,text": "fused_key"}


def candidate_id(item: str, modality: str) -> str:
    """The pool id of ``item``'s candidate of ``modality`` (e.g. ``test-00003:fused``)."""
    return f"{item}:{MODALITY_LABELS[modality]}"


def query_id(item: str, modality: str) -> str:
    """The id of ``item``'s query of ``modality`` (e.g. ``test-00003:query-image``)."""
    return f"{item}:query-{MODALITY_LABELS[modality]}"


def relevant_items(query_keys: list[str], candidate_keys: list[str]) -> list[set[int]]:
    """For each item k, the items j whose candidate is relevant to k's query: ``candidate_keys[j]`` is the
    candidate key of some item i with ``query_keys[i] == query_keys[k]`` (see the module docstring)."""
    if len(query_keys) != len(candidate_keys):
        raise ValueError(f"{len(query_keys)} query keys for {len(candidate_keys)} candidate keys")
    reachable: dict[str, set[str]] = defaultdict(set)  # query content -> candidate contents it may mean
    for q, c in zip(query_keys, candidate_keys):
        reachable[q].add(c)
    holders: dict[str, set[int]] = defaultdict(set)  # candidate content -> items holding it
    for j, c in enumerate(candidate_keys):
        holders[c].add(j)
    return [set().union(*(holders[c] for c in reachable[q])) for q in query_keys]


def _table(parts: list[dict[str, list]]) -> datasets.Dataset:
    merged: dict[str, list] = {"id": [], "text": [], "image": [], "modality": []}
    for part in parts:
        for key, column in merged.items():
            column.extend(part[key])
    string = datasets.Value("string")
    features = datasets.Features({"id": string, "text": string, "image": string, "modality": string})
    return datasets.Dataset.from_dict(merged, features=features)


def build_retrieval_tasks(test: datasets.Dataset, image_root: str | os.PathLike, *, pool: str = "mixed",
                          exclude_counterparts: bool = True, k: tuple[int, ...] = (1, 5, 10)) -> list[RetrievalTask]:
    """One :class:`RetrievalTask` per (query modality, candidate modality), row-major over ``MODALITIES`` =
    (image, text, image,text); names like ``scenes:text->fused``; qrels by content (module docstring).

    ``pool="mixed"``: every task shares one corpus of 3 × len(test) candidates (each item's image, caption
    and fused pair). With ``exclude_counterparts``, a query's ranking drops the candidates of the *other*
    modalities that would be right answers in their own cell (its own item's other views among them: the
    caption of the right picture is not a wrong answer to "find the picture") — all other candidates of all
    modalities stay as distractors, so a modality gap still costs recall. ``pool="local"``: each task's
    corpus holds only the target modality (M-BEIR's local pools).
    """
    if pool not in ("mixed", "local"):
        raise ValueError(f"pool must be 'mixed' or 'local', got {pool!r}")
    missing = [c for c in ("id", "image_path", "text", "query_image_path", "query_text", *_KEY_COLUMNS.values())
               if c not in test.column_names]
    if missing:
        raise ValueError(f"test split lacks column {missing[0]!r} (columns: {test.column_names})")
    items = test["id"][:]  # plain lists (datasets >= 4 returns lazy columns)
    n = len(items)
    keys = {m: list(test[column][:]) for m, column in _KEY_COLUMNS.items()}
    relevant = {(q, c): relevant_items(keys[q], keys[c]) for q in MODALITIES for c in MODALITIES}

    def rows(modality: str, texts: list[str], paths: list[str], ids: list[str]) -> dict[str, list]:
        return {"id": ids, "text": texts if "text" in modality else [None] * n,
                "image": paths if "image" in modality else [None] * n, "modality": [modality] * n}

    cand_texts, cand_paths = test["text"][:], test["image_path"][:]
    query_texts, query_paths = test["query_text"][:], test["query_image_path"][:]
    candidates = {m: rows(m, cand_texts, cand_paths, [candidate_id(i, m) for i in items]) for m in MODALITIES}
    mixed = _table([candidates[m] for m in MODALITIES]) if pool == "mixed" else None
    tasks = []
    for q in MODALITIES:
        queries = _table([rows(q, query_texts, query_paths, [query_id(i, q) for i in items])])
        for c in MODALITIES:
            qrels = {query_id(items[a], q): {candidate_id(items[b], c) for b in relevant[q, c][a]} for a in range(n)}
            exclude = None
            if mixed is not None and exclude_counterparts:
                exclude = {query_id(items[a], q): {candidate_id(items[b], other) for other in MODALITIES if other != c
                                                    for b in relevant[q, other][a]} for a in range(n)}
            tasks.append(RetrievalTask(
                name=f"scenes:{MODALITY_LABELS[q]}->{MODALITY_LABELS[c]}", queries=queries,
                corpus=mixed if mixed is not None else _table([candidates[c]]), qrels=qrels, metric="recall",
                k=tuple(k), image_root=str(image_root), exclude=exclude,
                meta={"query_modality": q, "candidate_modality": c, "pool": pool,
                      "exclude_counterparts": exclude is not None, "headline_k": 1},
            ))
    return tasks
