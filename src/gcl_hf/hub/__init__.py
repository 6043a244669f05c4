"""The Hub: publish a model in one of three forms with a GCL model card, and load any form back.

`publish` / `load` are the entry points; `adapter` is the LoRA adapter directory format and `card` renders
the model card.
"""

from gcl_hf.hub.loading import UnsafeWeightsError, load
from gcl_hf.hub.publish import check_publishable, publish, save_for_hub

__all__ = ["UnsafeWeightsError", "check_publishable", "load", "publish", "save_for_hub"]
