"""Stable import path of GCLTrainingArguments; the implementation lives in :mod:`gcl_hf.training.arguments`."""

from gcl_hf.training.arguments import *  # noqa: F401,F403
from gcl_hf.training.arguments import __all__  # noqa: F401
