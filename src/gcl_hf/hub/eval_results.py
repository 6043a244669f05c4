"""Our evaluator's JSON as the Hub's ``model-index`` entries (`huggingface_hub.EvalResult`), which the model card
carries so the Hub shows the results on the model page."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from huggingface_hub import EvalResult

__all__ = ["eval_results_from_json"]

#: Metric aliases as our evaluator (and common usage) spell them.
_METRIC_ALIASES = {"r": "recall", "p": "precision", "recall": "recall", "precision": "precision", "hit": "hit",
                   "ndcg": "ndcg", "mrr": "mrr", "map": "map"}
_METRIC_AT_K = re.compile(r"^(?P<name>[a-z]+?)(?:@|_at_|_)(?P<k>\d+)$", re.IGNORECASE)
_PLAIN_METRICS = {"mrr", "map", "ndcg", "accuracy"}
#: Known benchmark datasets on the Hub, by task-name prefix or benchmark name (lower case).
_BENCHMARK_DATASETS = {"m-beir": ("TIGER-Lab/M-BEIR", "M-BEIR"), "mbeir": ("TIGER-Lab/M-BEIR", "M-BEIR"),
                       "mmeb": ("TIGER-Lab/MMEB-eval", "MMEB"), "covr": ("covr", "WebVid-CoVR")}
_MMEB_RETRIEVAL = {"MSCOCO_i2t", "VisualNews_i2t", "VisDial", "MSCOCO_t2i", "VisualNews_t2i", "WebQA", "EDIS",
                   "Wiki-SS-NQ", "CIRR", "NIGHTS", "OVEN", "FashionIQ"}


def eval_results_from_json(source: str | os.PathLike | Mapping | Sequence) -> list[EvalResult]:
    """Turn our evaluator's JSON (a path, or the loaded object) into `EvalResult`s for ``model-index``.

    Accepted shapes (other top-level keys such as ``"model"`` are ignored):

    - ``{"<task>": {"recall@5": 0.61, ...}, ...}`` — one entry per task;
    - ``{"results": <either shape>, ...}``;
    - ``[{"task": "<task>", "metrics": {...}, "benchmark": ..., "dataset": ..., "split": ...}, ...]`` (metrics may
      also sit at the entry's top level).

    Metric keys ``recall@k`` / ``recall_at_k`` / ``R@k``, ``precision@k``, ``ndcg@k``, ``mrr``, ``map`` are kept;
    other keys (``num_queries``, timings) are not metrics and are skipped. Raises `ValueError` naming the file and
    entry when the JSON holds no usable metric or a metric value is not a number.
    """
    where = str(source) if isinstance(source, (str, os.PathLike)) else "eval results"
    if isinstance(source, (str, os.PathLike)):
        try:
            data = json.loads(Path(source).read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON (line {err.lineno}, column {err.colno}): {err.msg}") from err
    else:
        data = source
    if isinstance(data, Mapping) and "results" in data:
        data = data["results"]
        where += ': "results"'
    entries: list[tuple[str, Mapping]] = []
    if isinstance(data, Mapping):
        for task, metrics in data.items():
            if not isinstance(metrics, Mapping):
                continue  # top-level metadata such as "model": "..."
            entries.append((f'{where}: "{task}"', {"task": task, "metrics": metrics}))
    elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        for i, entry in enumerate(data):
            if not isinstance(entry, Mapping):
                raise ValueError(
                    f"{where}[{i}]: expected an object with 'task' and 'metrics', got {type(entry).__name__}"
                )
            entries.append((f"{where}[{i}]", entry))
    else:
        raise ValueError(f"{where}: expected a JSON object or list, got {type(data).__name__}")

    results: list[EvalResult] = []
    for loc, entry in entries:
        task = entry.get("task") or entry.get("name")
        if not isinstance(task, str) or not task:
            raise ValueError(f"{loc}: missing field 'task' (the task name)")
        metrics = entry.get("metrics", {k: v for k, v in entry.items() if k not in ("task", "name")})
        dataset_type, dataset_name = _dataset_for(task, entry)
        for key, value in metrics.items():
            metric = _metric_type(str(key))
            if metric is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{loc}: metric {key!r} is {value!r}, expected a number")
            metric_type, metric_name = metric
            results.append(EvalResult(
                task_type="retrieval",
                task_name=f"Retrieval ({task})",
                dataset_type=dataset_type,
                dataset_name=dataset_name,
                dataset_config=task,
                dataset_split=entry.get("split"),
                metric_type=metric_type,
                metric_name=metric_name,
                metric_value=float(value),
            ))
    if not results:
        raise ValueError(f"{where}: no metrics found (expected keys such as 'recall@5' or 'precision@1')")
    return results


def _metric_type(key: str) -> tuple[str, str] | None:
    match = _METRIC_AT_K.match(key.strip())
    if match and match.group("name").lower() in _METRIC_ALIASES:
        name, k = _METRIC_ALIASES[match.group("name").lower()], match.group("k")
        return f"{name}_at_{k}", f"{name.capitalize() if len(name) > 4 else name.upper()}@{k}"
    if key.lower() in _PLAIN_METRICS:
        return key.lower(), key.upper() if len(key) <= 4 else key.capitalize()
    return None


def _dataset_for(task: str, entry: Mapping) -> tuple[str, str]:
    if entry.get("dataset"):
        return str(entry["dataset"]), str(entry.get("dataset_name") or entry["dataset"])
    benchmark = str(entry.get("benchmark") or "").lower()
    if not benchmark:
        prefix = task.split("_", 1)[0].lower()
        if prefix in _BENCHMARK_DATASETS:
            benchmark = prefix
        elif task in _MMEB_RETRIEVAL:
            benchmark = "mmeb"
    if benchmark in _BENCHMARK_DATASETS:
        return _BENCHMARK_DATASETS[benchmark]
    return task, task
