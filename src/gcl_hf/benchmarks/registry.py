"""``load_benchmark(name, root_or_repo, **options)``: one entry point for every benchmark loader."""

from __future__ import annotations

import os
from collections.abc import Callable

from gcl_hf.benchmarks.covr import load_covr
from gcl_hf.benchmarks.mbeir import load_mbeir
from gcl_hf.benchmarks.mmeb import load_mmeb
from gcl_hf.benchmarks.task import RetrievalTask

__all__ = ["BENCHMARKS", "load_benchmark"]

#: Loader per benchmark name (see each loader for its options).
BENCHMARKS: dict[str, Callable[..., list[RetrievalTask]]] = {
    "mbeir": load_mbeir,
    "mmeb": load_mmeb,
    "covr": load_covr,
}

_ALIASES = {"m-beir": "mbeir", "m_beir": "mbeir", "webvid-covr": "covr", "webvid_covr": "covr", "mmeb-eval": "mmeb"}


def load_benchmark(name: str, root_or_repo: str | os.PathLike | None = None, **options) -> list[RetrievalTask]:
    """Load benchmark ``name`` (``"mbeir"``, ``"mmeb"`` or ``"covr"``) as a list of :class:`RetrievalTask`.

    ``root_or_repo`` is a local directory in the benchmark's published layout or a Hub dataset
    repo id (``None``: the benchmark's own repo). ``options`` go to :func:`load_mbeir`,
    :func:`load_mmeb` or :func:`load_covr`; an unknown option raises ``TypeError``.
    """
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}")
    return BENCHMARKS[key](root_or_repo, **options)
