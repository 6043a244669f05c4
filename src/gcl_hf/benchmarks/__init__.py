"""Benchmark loaders (M-BEIR, MMEB, CoVR) returning :class:`RetrievalTask` lists."""

from gcl_hf.benchmarks.covr import load_covr
from gcl_hf.benchmarks.errors import BenchmarkFormatError, BenchmarkNotFoundError, SkipReport
from gcl_hf.benchmarks.images import load_image, load_task_image
from gcl_hf.benchmarks.mbeir import MBEIR_TASK_MODALITIES, load_mbeir
from gcl_hf.benchmarks.mmeb import MMEB_RETRIEVAL_SUBSETS, load_mmeb
from gcl_hf.benchmarks.registry import BENCHMARKS, load_benchmark
from gcl_hf.benchmarks.task import MODALITIES, RetrievalTask

__all__ = [
    "BENCHMARKS",
    "MBEIR_TASK_MODALITIES",
    "MMEB_RETRIEVAL_SUBSETS",
    "MODALITIES",
    "BenchmarkFormatError",
    "BenchmarkNotFoundError",
    "RetrievalTask",
    "SkipReport",
    "load_benchmark",
    "load_covr",
    "load_image",
    "load_mbeir",
    "load_mmeb",
    "load_task_image",
]
