"""Recall@k as UniIR (M-BEIR) reports it: the fraction of queries with at least one relevant
candidate among their top k. An `evaluate` metric module (load it with ``evaluate.load(path)``
or ``gcl_hf.metrics.load("recall_at_k")``); self-contained so ``evaluate`` can copy it alone."""

from __future__ import annotations

import datasets
import evaluate

_CITATION = """\
@inproceedings{wei2024uniir,
  title={UniIR: Training and Benchmarking Universal Multimodal Information Retrievers},
  author={Wei, Cong and Chen, Yang and Chen, Haonan and Hu, Hexiang and Zhang, Ge and Fu, Jie and Ritter, Alan and Chen, Wenhu},
  booktitle={ECCV},
  year={2024}
}
"""

_DESCRIPTION = """\
UniIR's Recall@k: a query scores 1 when ANY of its relevant candidates is among the first k
entries of its ranking and 0 otherwise; the metric is the mean over queries (not the fraction of
relevant candidates retrieved). Every query must have at least one relevant candidate.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `str`): for each query, candidate ids ranked best first
        (at least k of them, unless the pool is smaller).
    references (`list` of `list` of `str`): for each query, the ids of its relevant candidates.
    k (`int` or `list` of `int`, default 5): cut-off(s).
Returns:
    `dict`: ``{"recall@<k>": float}`` for every k (values in [0, 1]).
Examples:
    >>> metric = evaluate.load("recall_at_k")  # or gcl_hf.metrics.load("recall_at_k")
    >>> metric.compute(predictions=[["a", "b"], ["c", "d"]], references=[["b"], ["x"]], k=[1, 2])
    {'recall@1': 0.0, 'recall@2': 0.5}
"""


def _cutoffs(k) -> list[int]:
    ks = [k] if isinstance(k, int) else list(k)
    if not ks or any(not isinstance(x, int) or isinstance(x, bool) or x < 1 for x in ks):
        raise ValueError(f"k must be a positive int or a non-empty list of them, got {k!r}")
    return ks


def recall_at_k(predictions, references, k=5) -> dict[str, float]:
    """The metric as a plain function (what :class:`RecallAtK` computes)."""
    ks = _cutoffs(k)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("recall_at_k needs at least one query")
    hits = {x: 0 for x in ks}
    for n, (ranked, relevant) in enumerate(zip(predictions, references)):
        relevant = set(relevant)
        if not relevant:
            raise ValueError(f"query {n} has no relevant candidate (references[{n}] is empty)")
        first = next((i for i, c in enumerate(ranked) if c in relevant), None)
        for x in ks:
            hits[x] += first is not None and first < x
    return {f"recall@{x}": hits[x] / len(predictions) for x in ks}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RecallAtK(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
            reference_urls=["https://github.com/TIGER-AI-Lab/UniIR"],
        )

    def _compute(self, predictions, references, k=5):
        return recall_at_k(predictions, references, k)
