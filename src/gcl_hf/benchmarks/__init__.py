"""Benchmark loaders (M-BEIR, MMEB, CoVR) returning :class:`RetrievalTask` lists."""

from .covr import load_covr
from .errors import BenchmarkFormatError, BenchmarkNotFoundError, SkipCounter
from .images import load_image, load_task_image
from .mbeir import MBEIR_TASK_MODALITIES, load_mbeir
from .mmeb import MMEB_RETRIEVAL_SUBSETS, load_mmeb
from .registry import BENCHMARKS, load_benchmark
from .task import MODALITIES, RetrievalTask

__all__ = [
    "BENCHMARKS",
    "MBEIR_TASK_MODALITIES",
    "MMEB_RETRIEVAL_SUBSETS",
    "MODALITIES",
    "BenchmarkFormatError",
    "BenchmarkNotFoundError",
    "RetrievalTask",
    "SkipCounter",
    "load_benchmark",
    "load_covr",
    "load_image",
    "load_mbeir",
    "load_mmeb",
    "load_task_image",
]
