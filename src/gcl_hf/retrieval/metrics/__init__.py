"""The retrieval metrics, shipped as `evaluate` modules.

``gcl_hf.metrics.load("recall_at_k")`` is ``evaluate.load(<path of the shipped module>)``: it
works offline (``evaluate`` copies the local script into its modules cache; no Hub access).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["METRICS", "load", "module_path"]

#: Names of the shipped metric modules.
METRICS = ("recall_at_k", "precision_at_1")


def module_path(name: str) -> str:
    """Filesystem path of a shipped metric script (what ``evaluate.load`` takes)."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; shipped metrics: {', '.join(METRICS)}")
    return str(Path(__file__).resolve().parent / name / f"{name}.py")


def load(name: str, **kwargs: Any):
    """``evaluate.load`` of a shipped metric (``kwargs`` go to ``evaluate.load``)."""
    import evaluate

    return evaluate.load(module_path(name), **kwargs)
