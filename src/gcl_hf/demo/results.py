"""What a demo run produces: the per-seed artefacts the plot and the gallery read, and the finished result.

Its own module so that the pipeline (which writes them) and the plot and gallery (which read them) import it,
not each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gcl_hf.benchmarks.task import RetrievalTask
from gcl_hf.demo.evaluation import PoolEmbeddings

__all__ = ["DemoResult", "SeedArtifacts"]


@dataclass
class SeedArtifacts:
    """What the plot and the gallery need from one seed: the test split and its mixed-pool tasks, every
    model's embeddings, and every model's top-5 ids per query and cell."""

    seed: int
    test: Any
    tasks: list[RetrievalTask]
    embeddings: dict[str, PoolEmbeddings]
    rankings: dict[str, dict[str, list[list[str]]]]


@dataclass
class DemoResult:
    """A finished run: ``results`` (the content of ``results.json``), the first seed's artefacts, and the
    written file paths."""

    results: dict[str, Any]
    first_seed: SeedArtifacts
    results_path: str
    plot_path: str | None = None
    gallery_path: str | None = None
