"""Saved rankings of `gcl-hf eval --save-rankings`: TREC run files, run JSON and qrels, and readers for them.

Per task ``<task>`` the directory gets

- ``<task>.trec``: the TREC run format, one line per (query, candidate): ``qid Q0 docid rank score run_name``
  (rank from 1, score = inner product of the normalised embeddings, written with 9 significant digits, the
  precision of float32);
- ``<task>.run.json``: ``{qid: {docid: score}}``, each inner object in rank order (ranx's ``Run.from_dict``,
  pytrec_eval);
- ``<task>.qrels``: the TREC qrels of the task, ``qid 0 docid 1`` for every relevant candidate.

``rankings.json`` (written last) lists the files of the run that wrote the directory: what is current. Files an
earlier run listed there and this one does not write (a task no longer evaluated) are removed; files no run
listed are never touched.

TREC files split lines on whitespace, so an id holding whitespace or ``%`` is written percent-encoded there
(``a b`` -> ``a%20b``; :func:`read_trec_run` / :func:`read_qrels` decode it); the JSON keeps ids verbatim.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from gcl_hf.atomic import atomic_write_text

__all__ = ["MANIFEST", "finish_rankings", "read_qrels", "read_run_json", "read_trec_run", "trec_id", "write_rankings"]

#: the list of the current run's files in a rankings directory
MANIFEST = "rankings.json"

_NEEDS_QUOTING = re.compile(r"[\s%]")


def trec_id(value: str) -> str:
    """``value`` as one whitespace-free TREC token (percent-encoded only when it holds whitespace or ``%``)."""
    value = str(value)
    if not value:
        raise ValueError("an empty id cannot be written to a TREC file")
    return quote(value, safe="") if _NEEDS_QUOTING.search(value) else value


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name)


def write_rankings(directory: str | os.PathLike, task: Any, rankings: Any, *,
                   run_name: str = "gcl-hf") -> dict[str, Path]:
    """Write ``task``'s ``rankings`` (a :class:`~gcl_hf.retrieval.evaluation.TaskRankings`) to ``directory``;
    returns the paths written (``trec``, ``json``, ``qrels``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = _safe_name(task.name)
    paths = {"trec": directory / f"{stem}.trec", "json": directory / f"{stem}.run.json",
             "qrels": directory / f"{stem}.qrels"}
    with open(paths["trec"], "w", encoding="utf-8") as fh:
        for qid, ids, scores in zip(rankings.query_ids, rankings.ids, rankings.scores):
            q = trec_id(qid)
            for rank, (doc, score) in enumerate(zip(ids, scores), start=1):
                fh.write(f"{q} Q0 {trec_id(doc)} {rank} {score:.9g} {run_name}\n")
    paths["json"].write_text(json.dumps(rankings.as_dict()), encoding="utf-8")
    with open(paths["qrels"], "w", encoding="utf-8") as fh:
        for qid in rankings.query_ids:
            for doc in sorted(task.qrels.get(qid, ())):
                fh.write(f"{trec_id(qid)} 0 {trec_id(doc)} 1\n")
    return paths


def finish_rankings(directory: str | os.PathLike, written: dict[str, dict[str, Path]], *, run_name: str) -> Path:
    """Record ``written`` (task -> the paths :func:`write_rankings` returned) as the current run in
    :data:`MANIFEST`, and remove the files the previous manifest listed that this run did not write."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / MANIFEST
    current = {task: {kind: path.name for kind, path in paths.items()} for task, paths in written.items()}
    names = {name for files in current.values() for name in files.values()}
    try:
        previous = json.loads(manifest.read_text(encoding="utf-8")).get("tasks", {})
        stale = {n for files in previous.values() for n in files.values()} - names
    except (OSError, ValueError, AttributeError):
        stale = set()
    atomic_write_text(manifest, json.dumps({"run_name": run_name, "tasks": current}, indent=1))
    for name in sorted(stale):
        if "/" not in name and name != MANIFEST:
            (directory / name).unlink(missing_ok=True)
    return manifest


def _fields(path: str | os.PathLike, form: str) -> Iterator[list[str]]:
    """The whitespace-separated fields of each non-blank line, which must be ``form`` (e.g. 'qid 0 docid rel')."""
    width = len(form.split())
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            parts = line.split()
            if parts and len(parts) != width:
                raise ValueError(f"{path}, line {number}: expected {form!r}, got {line.strip()!r}")
            if parts:
                yield parts


def read_trec_run(path: str | os.PathLike) -> dict[str, list[tuple[str, float]]]:
    """A TREC run file as ``{qid: [(docid, score), ...]}`` ordered by the rank column."""
    ranked: dict[str, list[tuple[int, str, float]]] = {}
    for qid, _, doc, rank, score, _ in _fields(path, "qid Q0 docid rank score run"):
        ranked.setdefault(unquote(qid), []).append((int(rank), unquote(doc), float(score)))
    return {q: [(d, s) for _, d, s in sorted(rows)] for q, rows in ranked.items()}


def read_qrels(path: str | os.PathLike) -> dict[str, set[str]]:
    """A TREC qrels file as ``{qid: {relevant docid, ...}}`` (relevance > 0)."""
    qrels: dict[str, set[str]] = {}
    for qid, _, doc, relevance in _fields(path, "qid 0 docid relevance"):
        if int(relevance) > 0:
            qrels.setdefault(unquote(qid), set()).add(unquote(doc))
    return qrels


def read_run_json(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """A ``<task>.run.json`` file: ``{qid: {docid: score}}`` in rank order."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
