"""Stable import path of the modality-gap analysis; the implementation lives in :mod:`gcl_hf.retrieval.analysis`."""

from gcl_hf.retrieval.analysis import *  # noqa: F401,F403
from gcl_hf.retrieval.analysis import __all__  # noqa: F401
