"""Precision@1 as MMEB (VLM2Vec) reports it for retrieval: the fraction of queries whose top-ranked
candidate is a positive. An `evaluate` metric module (``evaluate.load(path)`` or
``gcl_hf.metrics.load("precision_at_1")``); self-contained so ``evaluate`` can copy it alone."""

from __future__ import annotations

import datasets
import evaluate

_CITATION = """\
@inproceedings{jiang2025vlm2vec,
  title={VLM2Vec: Training Vision-Language Models for Massive Multimodal Embedding Tasks},
  author={Jiang, Ziyan and Meng, Rui and Yang, Xinyi and Yavuz, Semih and Zhou, Yingbo and Chen, Wenhu},
  booktitle={ICLR},
  year={2025}
}
"""

_DESCRIPTION = """\
MMEB's Precision@1: each query ranks its own candidate list (the positive is, by MMEB's
convention, the first entry of the stored list, but any id in `references` counts); a query
scores 1 when its top-ranked candidate is a positive. The metric is the mean over queries.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `str`): for each query, candidate ids ranked best first
        (only the first is used; an empty ranking scores 0).
    references (`list` of `list` of `str`): for each query, the id(s) of its positive(s).
Returns:
    `dict`: ``{"precision@1": float}`` in [0, 1].
Examples:
    >>> metric = evaluate.load("precision_at_1")  # or gcl_hf.metrics.load("precision_at_1")
    >>> metric.compute(predictions=[["a", "b"], ["c", "d"]], references=[["a"], ["d"]])
    {'precision@1': 0.5}
"""


def precision_at_1(predictions, references) -> dict[str, float]:
    """The metric as a plain function (what :class:`PrecisionAt_1` computes)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("precision_at_1 needs at least one query")
    hits = 0
    for n, (ranked, positives) in enumerate(zip(predictions, references)):
        if not positives:
            raise ValueError(f"query {n} has no positive (references[{n}] is empty)")
        hits += bool(ranked) and ranked[0] in set(positives)
    return {"precision@1": hits / len(predictions)}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PrecisionAt_1(evaluate.Metric):  # noqa: N801 - evaluate derives the name "precision_at_1"
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
            reference_urls=["https://github.com/TIGER-AI-Lab/VLM2Vec"],
        )

    def _compute(self, predictions, references):
        return precision_at_1(predictions, references)
