"""Stable import path of exact top-k search; the implementation lives in :mod:`gcl_hf.retrieval.search`."""

from gcl_hf.retrieval.search import *  # noqa: F401,F403
from gcl_hf.retrieval.search import __all__  # noqa: F401
