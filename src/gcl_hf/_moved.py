"""Modules that moved when gcl-hf was split into subpackages: importing an old path names the new one instead of
failing with a bare ``ModuleNotFoundError``."""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any

__all__ = ["MOVED", "MovedModuleFinder", "install"]

#: old module -> where it lives now
MOVED: dict[str, str] = {
    "gcl_hf.adapter": "gcl_hf.hub.adapter",
    "gcl_hf.cli_common": "gcl_hf.cli.common",
    "gcl_hf.cli_encode": "gcl_hf.cli.encode",
    "gcl_hf.cli_eval": "gcl_hf.cli.eval",
    "gcl_hf.cli_train": "gcl_hf.cli.train",
    "gcl_hf.collator": "gcl_hf.data.collator",
    "gcl_hf.distributed": "gcl_hf.losses.distributed",
    "gcl_hf.distributed_encoding": "gcl_hf.retrieval.distributed_encoding",
    "gcl_hf.embedding_cache": "gcl_hf.retrieval.embedding_cache",
    "gcl_hf.encoding": "gcl_hf.retrieval.encoding",
    "gcl_hf.evaluation": "gcl_hf.retrieval.evaluation",
    "gcl_hf.fusion": "gcl_hf.modeling.fusion",
    "gcl_hf.grad_cache": "gcl_hf.training.grad_cache",
    "gcl_hf.images": "gcl_hf.data.images",
    "gcl_hf.model_card": "gcl_hf.hub.card",
}


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Raises a ``ModuleNotFoundError`` naming the new path for an import of a moved module."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        new = MOVED.get(fullname)
        if new is not None:
            raise ModuleNotFoundError(f"{fullname} moved to {new}: import it from there (gcl-hf now groups its "
                                      "modules in subpackages; see README 'Architecture')", name=fullname)


def install() -> None:
    """Add the finder to ``sys.meta_path`` once (after the regular finders: it only sees imports they miss); done
    when ``gcl_hf`` is imported."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())


install()
