"""Stable import path of GCLTrainer; the implementation lives in :mod:`gcl_hf.training.trainer`."""

from gcl_hf.training.trainer import *  # noqa: F401,F403
from gcl_hf.training.trainer import __all__  # noqa: F401
