"""Encode with several processes (``torchrun`` / ``accelerate launch``): into the embedding cache, or in memory;
and :func:`encode_with`, where :class:`~gcl_hf.retrieval.options.EncodeOptions` pick the encoding path.

Every process runs :func:`encode_corpus_distributed` on the same model, processor and dataset: each
encodes its share of the cache's shards (shard ``n`` goes to process ``n % world_size``, see
:func:`~gcl_hf.retrieval.embedding_cache.encode_corpus`), the processes meet at a barrier, and each then
memory-maps the complete set. The result equals a one-process run (same rows, same order), is keyed on
disk by a fingerprint of model + processor + dataset, and resumes after a crash: shards already
written are skipped, whatever the number of processes of the new run.

:func:`encode_dataset_sharded` is the in-memory form (the trainer's retrieval evaluation): each process encodes a
contiguous shard of the rows and every process receives all of them, in order.

The process group is accelerate's ``PartialState`` (torchrun, ``accelerate launch``, MPI launchers; ``gloo`` on
CPU, NCCL on GPUs); a group the caller already initialised is used as is, and :func:`distributed_session` tears
down only a group it started itself.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from accelerate.utils import gather_object

from gcl_hf.retrieval.embedding_cache import CorpusEmbeddings, encode_corpus, load_cached
from gcl_hf.retrieval.encoding import encode_dataset
from gcl_hf.retrieval.options import EncodeOptions

__all__ = [
    "DistributedEncoding",
    "ProcessInfo",
    "ShardedEncoding",
    "barrier",
    "distributed_session",
    "encode_corpus_distributed",
    "encode_dataset_sharded",
    "encode_with",
    "init_distributed",
    "main_process_first",
    "process_device",
    "process_info",
    "shard_rows",
]


@dataclass(frozen=True)
class ProcessInfo:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _state(backend: str | None = None, timeout: timedelta | None = None) -> Any:
    from accelerate import PartialState

    kwargs: dict[str, Any] = {"cpu": not torch.cuda.is_available()}
    if backend is not None:
        kwargs["backend"] = backend
    if timeout is not None:
        kwargs["timeout"] = timeout
    return PartialState(**kwargs)


def process_info() -> ProcessInfo:
    """This process's rank, world size and local rank (accelerate's ``PartialState``; one process when no
    launcher started several)."""
    state = _state()
    return ProcessInfo(state.process_index, state.num_processes, state.local_process_index)


def init_distributed(backend: str | None = None, timeout: timedelta | None = None) -> ProcessInfo:
    """Join the process group the launcher prepared (a no-op for one process or an existing group)."""
    state = _state(backend, timeout)
    return ProcessInfo(state.process_index, state.num_processes, state.local_process_index)


def barrier() -> None:
    """Wait for every process (no-op when not distributed)."""
    _state().wait_for_everyone()


@contextmanager
def main_process_first() -> Iterator[None]:
    """Run the block on rank 0 first, then on the others (e.g. parse a pool file into a shared Arrow cache once,
    and let the other processes read the cache)."""
    with _state().main_process_first():
        yield


def _group_initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


@contextmanager
def distributed_session(backend: str | None = None, timeout: timedelta | None = None) -> Iterator[ProcessInfo]:
    """Join the launch's process group for the block (:func:`init_distributed`); on leaving it, tear the group
    down (accelerate's ``PartialState().destroy_process_group()``) only if this block started it, so a command
    run inside a caller's group leaves that group to the caller."""
    started = not _group_initialized()
    info = init_distributed(backend, timeout)
    try:
        yield info
    finally:
        if started and _group_initialized():
            _state().destroy_process_group()


def process_device(device: str | torch.device | None = None, local_rank: int | None = None) -> torch.device:
    """The device this process encodes on: ``device`` as given, except that a bare ``"cuda"`` (or
    ``None`` when a GPU is present) means GPU ``local_rank`` (modulo the GPUs visible); sets it current."""
    local_rank = process_info().local_rank if local_rank is None else local_rank
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {str(device)!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


@dataclass
class DistributedEncoding:
    """The outcome of :func:`encode_corpus_distributed` (the same on every process).

    ``embeddings`` is the complete memory-mapped cache; ``fingerprint`` the cache key (hash of model
    weights and config, processor settings, dataset content and processor kwargs), also the directory
    name; ``encoded_rows`` the rows each process encoded in this run (rank order; zeros when all was
    cached); ``seconds`` the wall time from start to the last process done (fingerprinting included).
    """

    embeddings: CorpusEmbeddings
    fingerprint: str
    encoded_rows: list[int]
    seconds: float

    @property
    def directory(self) -> Path:
        return self.embeddings.directory

    @property
    def num_rows(self) -> int:
        return self.embeddings.num_rows

    @property
    def num_processes(self) -> int:
        return len(self.encoded_rows)

    @property
    def total_encoded(self) -> int:
        return sum(self.encoded_rows)

    @property
    def rows_per_second(self) -> float:
        """Rows encoded per second of wall time, all processes together (0 when all was cached)."""
        return self.total_encoded / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (what ``gcl-hf encode --output`` writes per dataset)."""
        return {
            "directory": str(self.directory),
            "fingerprint": self.fingerprint,
            "num_rows": self.num_rows,
            "dim": self.embeddings.dim,
            "num_processes": self.num_processes,
            "encoded_rows": self.encoded_rows,
            "seconds": round(self.seconds, 4),
            "rows_per_second": round(self.rows_per_second, 2),
        }


def _assemble(directory: Path) -> CorpusEmbeddings:
    """Every shard of a finished cache directory, memory-mapped and verified; an error names the missing or
    failing ones and why."""
    embeddings = load_cached(directory)
    missing = embeddings.missing
    if missing:
        named = [f"{name} ({embeddings.problems[name]})" if name in embeddings.problems else name
                 for name in missing[:5]]
        raise RuntimeError(
            f"{directory}: {len(missing)} shard(s) missing or failing verification after every process finished "
            f"({', '.join(named)}{', ...' if len(missing) > 5 else ''}); run again to encode just those"
        )
    return embeddings


def encode_corpus_distributed(
    model: Any,
    processor: Any,
    dataset: datasets.Dataset,
    options: EncodeOptions | None = None,
    *,
    desc: str = "encoding corpus",
    **overrides: Any,
) -> DistributedEncoding:
    """Embed ``dataset`` into ``cache_dir`` with every process of the launch, each taking its shards.

    Call it on every process with the same arguments (under ``torchrun``/``accelerate launch``; the
    process group is joined if needed, see :func:`init_distributed`); alone it is a one-process run.
    ``options`` and ``overrides`` are those of :func:`~gcl_hf.retrieval.embedding_cache.encode_corpus`
    (``cache_dir`` required); progress bars show on rank 0 only (none with ``show_progress=False``). Returns the
    complete embeddings on every process, or raises on every process when they disagree on the fingerprint
    (different model, processor or dataset) or a shard is missing.
    """
    options = EncodeOptions.resolve(options, **overrides)
    if options.cache_dir is None:
        raise ValueError("encode_corpus_distributed needs a cache_dir (EncodeOptions.cache_dir or cache_dir=...); "
                         "encode_dataset_sharded encodes in memory")
    info = init_distributed()
    mine = dataclasses.replace(options, show_progress=info.is_main and options.show_progress is not False)
    barrier()
    start = time.perf_counter()
    part = encode_corpus(model, processor, dataset, mine, process_index=info.rank, num_processes=info.world_size,
                         desc=desc)
    barrier()
    seconds = time.perf_counter() - start
    gathered = gather_object([(part.directory.name, part.encoded_rows)])
    keys = [key for key, _ in gathered]
    if len(set(keys)) > 1:
        listing = ", ".join(f"rank {r}: {k}" for r, k in enumerate(keys))
        raise RuntimeError(
            f"processes computed different cache fingerprints ({listing}): every process must load the same "
            "model, processor and dataset"
        )
    embeddings = part if part.complete else _assemble(part.directory)
    return DistributedEncoding(embeddings, part.directory.name, [rows for _, rows in gathered], seconds)


@dataclass
class ShardedEncoding:
    """The outcome of :func:`encode_dataset_sharded` (the same on every process): ``embeddings`` ``[N, D]``
    (float32, CPU, dataset order) and ``encoded_rows``, the rows each process encoded (rank order)."""

    embeddings: torch.Tensor
    encoded_rows: list[int]


def shard_rows(num_rows: int, rank: int, world_size: int) -> range:
    """The contiguous rows process ``rank`` of ``world_size`` encodes (shard sizes differ by at most one)."""
    return range(rank * num_rows // world_size, (rank + 1) * num_rows // world_size)


def _all_gather_rows(part: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Every process's ``part`` (``sizes[r]`` rows on rank ``r``), concatenated in rank order, on every process."""
    import torch.distributed as dist

    device = _state().device  # the collective's device: CPU under gloo, this process's GPU under NCCL
    padded = torch.zeros(max(sizes), part.shape[1], dtype=torch.float32, device=device)
    padded[: len(part)] = part.to(device)
    chunks = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(chunks, padded)
    return torch.cat([chunk[:n] for chunk, n in zip(chunks, sizes)]).cpu()


def encode_dataset_sharded(model: Any, processor: Any, dataset: datasets.Dataset, *, show_progress: bool = True,
                           **kwargs: Any) -> ShardedEncoding:
    """:func:`~gcl_hf.retrieval.encoding.encode_dataset` split over the processes of the launch: each encodes
    its :func:`shard_rows` (progress on rank 0 only), then every process gets all ``len(dataset)`` rows in order,
    equal to a one-process run. Call it on every process with the same dataset; ``kwargs`` are
    ``encode_dataset``'s."""
    info = init_distributed()
    if info.world_size == 1:
        out = encode_dataset(model, processor, dataset, show_progress=show_progress, **kwargs)
        return ShardedEncoding(out, [len(out)])
    rows = shard_rows(len(dataset), info.rank, info.world_size)
    part = encode_dataset(model, processor, dataset, rows=np.arange(rows.start, rows.stop),
                          show_progress=show_progress and info.is_main, **kwargs)
    sizes = [len(shard_rows(len(dataset), r, info.world_size)) for r in range(info.world_size)]
    if not len(dataset):
        return ShardedEncoding(part, sizes)
    return ShardedEncoding(_all_gather_rows(part, sizes), sizes)


def encode_with(model: Any, processor: Any, dataset: datasets.Dataset, options: EncodeOptions, *,
                desc: str = "encoding") -> torch.Tensor | CorpusEmbeddings:
    """Embeddings of every row of ``dataset`` (row-aligned) the way ``options`` say: in memory
    (:func:`~gcl_hf.retrieval.encoding.encode_dataset`), through the on-disk cache with a ``cache_dir``
    (:func:`~gcl_hf.retrieval.embedding_cache.encode_corpus`), and with ``distributed`` each process of the launch a
    share (:func:`encode_dataset_sharded`, or :func:`encode_corpus_distributed` with a cache): every process gets
    all rows."""
    if options.cache_dir is None:
        kwargs = options.dataset_kwargs()
        if options.distributed:
            return encode_dataset_sharded(model, processor, dataset, desc=desc, **kwargs).embeddings
        return encode_dataset(model, processor, dataset, desc=desc, **kwargs)
    if options.distributed:  # progress on rank 0 only
        return encode_corpus_distributed(model, processor, dataset, options, desc=desc).embeddings
    return encode_corpus(model, processor, dataset, options, desc=desc)
