"""The common shape of every retrieval benchmark task."""

from __future__ import annotations

from dataclasses import dataclass, field

import datasets

#: Modality strings used in the ``modality`` column of queries and corpora.
MODALITIES = ("image", "text", "image,text")
#: The encoder's name for each ``modality`` column value: ``"image,text"`` items are ``"fused"``. The one place
#: the public column vocabulary meets the library's (``"image"``, ``"text"``, ``"fused"``).
ENCODER_MODALITIES: dict[str, str] = {"image": "image", "text": "text", "image,text": "fused"}


@dataclass
class RetrievalTask:
    """One retrieval task: queries ranked against a corpus, judged by ``qrels``.

    ``queries`` and ``corpus`` are Arrow-backed :class:`datasets.Dataset` objects with columns
    ``id`` (str), ``text`` (str or None), ``image`` (a local file path or None; relative paths
    resolve against ``image_root``) and ``modality`` (one of :data:`MODALITIES`).

    ``metric`` names the benchmark's headline metric: ``"recall"`` (UniIR's Recall@k: a query
    counts when any relevant candidate is in its top k) or ``"precision_at_1"`` (MMEB).
    ``candidates`` restricts each query to its own candidate list (MMEB); ``exclude`` removes
    ids from a query's ranking (CoVR's self-match removal).
    """

    name: str
    queries: datasets.Dataset
    corpus: datasets.Dataset
    qrels: dict[str, set[str]]
    metric: str = "recall"
    k: tuple[int, ...] = (1, 5, 10)
    image_root: str | None = None
    candidates: dict[str, list[str]] | None = None
    exclude: dict[str, set[str]] | None = None
    meta: dict = field(default_factory=dict)

    @property
    def headline_k(self) -> int:
        """The k the papers report (``meta["headline_k"]`` or 5 for recall, 1 for precision)."""
        return int(self.meta.get("headline_k", 1 if self.metric == "precision_at_1" else 5))
