"""Stable import path of GCLModel; the implementation lives in :mod:`gcl_hf.modeling.model`."""

from gcl_hf.modeling.model import *  # noqa: F401,F403
from gcl_hf.modeling.model import __all__  # noqa: F401
