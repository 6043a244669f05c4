"""The Hub: publish a model in one of three forms with a GCL model card, and load any form back.

`publish` / `load` are the entry points; `adapter` is the LoRA adapter directory format and `card` renders
the model card. The names below load on first use, so ``gcl_hf.hub.forms`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {"UnsafeWeightsError": "gcl_hf.hub.loading", "load": "gcl_hf.hub.loading",
         "check_publishable": "gcl_hf.hub.publish", "publish": "gcl_hf.hub.publish",
         "save_for_hub": "gcl_hf.hub.publish"}

if TYPE_CHECKING:  # pragma: no cover
    from gcl_hf.hub.loading import UnsafeWeightsError, load  # noqa: F401
    from gcl_hf.hub.publish import check_publishable, publish, save_for_hub  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gcl_hf.hub' has no attribute {name!r}")


__all__ = ["UnsafeWeightsError", "check_publishable", "load", "publish", "save_for_hub"]
