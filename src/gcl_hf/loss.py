"""Stable import path of the GCL loss; the implementation lives in :mod:`gcl_hf.losses.gcl`."""

from gcl_hf.losses.gcl import *  # noqa: F401,F403
from gcl_hf.losses.gcl import __all__  # noqa: F401
