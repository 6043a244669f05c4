"""Stable import path of GCLConfig; the implementation lives in :mod:`gcl_hf.modeling.configuration`."""

from gcl_hf.modeling.configuration import *  # noqa: F401,F403
from gcl_hf.modeling.configuration import __all__  # noqa: F401
