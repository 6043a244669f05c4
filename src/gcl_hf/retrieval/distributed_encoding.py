"""Encode a corpus with several processes (``torchrun`` / ``accelerate launch``) into the embedding cache.

Every process runs :func:`encode_corpus_distributed` on the same model, processor and dataset: each
encodes its share of the cache's shards (shard ``n`` goes to process ``n % world_size``, see
:func:`~gcl_hf.retrieval.embedding_cache.encode_corpus`), the processes meet at a barrier, and each then
memory-maps the complete set. The result equals a one-process run (same rows, same order), is keyed on
disk by a fingerprint of model + processor + dataset, and resumes after a crash: shards already
written are skipped, whatever the number of processes of the new run.

The process group comes from the launcher's environment: ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``
(torchrun, ``accelerate launch``) start a ``gloo`` group (only a barrier and a few numbers travel
between processes, so a CPU backend serves GPU runs too); MPI-style variables (``PMI_SIZE``,
``OMPI_COMM_WORLD_SIZE``, ...) are handed to accelerate's ``PartialState``. A group the caller already
initialised is used as is.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import datasets
import torch
import torch.distributed as dist

from gcl_hf.retrieval.embedding_cache import CorpusEmbeddings, encode_corpus, load_cached

__all__ = [
    "DistributedEncoding",
    "ProcessInfo",
    "barrier",
    "encode_corpus_distributed",
    "init_distributed",
    "main_process_first",
    "process_device",
    "process_info",
]

#: (world size, rank, local rank) environment variables, per launcher family.
_LAUNCHER_ENV = (
    ("WORLD_SIZE", "RANK", "LOCAL_RANK"),  # torchrun, accelerate launch
    ("PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID"),  # Intel MPI / MPICH
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"),  # Open MPI
    ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_LOCAL_RANK"),  # MVAPICH
)


@dataclass(frozen=True)
class ProcessInfo:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def _launcher_env() -> tuple[int, ProcessInfo] | None:
    """``(family index, info)`` for the first launcher whose variables say world size > 1."""
    for family, (size_var, rank_var, local_var) in enumerate(_LAUNCHER_ENV):
        size = _env_int(size_var)
        if size is not None and size > 1:
            rank = _env_int(rank_var)
            if rank is None:
                raise ValueError(f"{size_var}={size} is set but {rank_var} is not: cannot tell this process's rank")
            local = _env_int(local_var)
            return family, ProcessInfo(rank, size, rank if local is None else local)
    return None


def process_info() -> ProcessInfo:
    """This process's rank, world size and local rank: from the initialised process group, else from the
    launcher's environment, else a single process."""
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        local = _env_int("LOCAL_RANK")
        return ProcessInfo(rank, dist.get_world_size(), rank if local is None else local)
    found = _launcher_env()
    return found[1] if found else ProcessInfo()


def init_distributed(backend: str | None = None, timeout: timedelta | None = None) -> ProcessInfo:
    """Join the process group the launcher prepared (no-op for one process or an existing group).

    torchrun-style variables start ``backend`` (default ``"gloo"``) with the ``env://`` rendezvous;
    MPI-style variables go through accelerate's ``PartialState`` (which picks ccl/mpi/gloo).
    """
    if dist.is_available() and dist.is_initialized():
        return process_info()
    found = _launcher_env()
    if found is None:
        return ProcessInfo()
    family, info = found
    if not dist.is_available():
        raise RuntimeError(f"{info.world_size} processes were launched but this torch build has no torch.distributed")
    if family == 0:
        kwargs: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        dist.init_process_group(backend or "gloo", rank=info.rank, world_size=info.world_size, **kwargs)
    else:
        from accelerate import PartialState

        PartialState(**({"backend": backend} if backend else {}))
    return process_info()


def barrier() -> None:
    """Wait for every process of the default group (no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


@contextmanager
def main_process_first() -> Iterator[None]:
    """Run the block on rank 0 first, then on the others (e.g. parse a pool file into a shared Arrow
    cache once, and let the other processes read the cache)."""
    main = process_info().is_main
    if not main:
        barrier()
    try:
        yield
    finally:
        if main:
            barrier()


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


def _all_gather(value: Any) -> list[Any]:
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


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
    """Every shard of a finished cache directory, memory-mapped; an error names the missing ones."""
    embeddings = load_cached(directory)
    missing = embeddings.missing
    if missing:
        raise RuntimeError(
            f"{directory}: {len(missing)} shard(s) missing or incomplete after every process finished "
            f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); run again to encode just those"
        )
    return embeddings


def encode_corpus_distributed(
    model: Any,
    processor: Any,
    dataset: datasets.Dataset,
    *,
    cache_dir: str | os.PathLike,
    image_root: str | None = None,
    batch_size: int = 64,
    shard_size: int = 65536,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    processor_kwargs: dict[str, Any] | None = None,
    show_progress: bool | None = None,
    desc: str = "encoding corpus",
) -> DistributedEncoding:
    """Embed ``dataset`` into ``cache_dir`` with every process of the launch, each taking its shards.

    Call it on every process with the same arguments (under ``torchrun``/``accelerate launch``; the
    process group is joined if needed, see :func:`init_distributed`); alone it is a one-process run.
    Arguments are those of :func:`~gcl_hf.retrieval.embedding_cache.encode_corpus`; ``show_progress`` defaults
    to rank 0 only. Returns the complete embeddings on every process, or raises on every process when
    they disagree on the fingerprint (different model, processor or dataset) or a shard is missing.
    """
    info = init_distributed()
    show = info.is_main if show_progress is None else show_progress
    barrier()
    start = time.perf_counter()
    part = encode_corpus(
        model, processor, dataset, cache_dir=cache_dir, image_root=image_root, batch_size=batch_size,
        shard_size=shard_size, num_workers=num_workers, device=device, processor_kwargs=processor_kwargs,
        process_index=info.rank, num_processes=info.world_size, show_progress=show, desc=desc,
    )
    barrier()
    seconds = time.perf_counter() - start
    gathered = _all_gather((part.directory.name, part.encoded_rows))
    keys = [key for key, _ in gathered]
    if len(set(keys)) > 1:
        listing = ", ".join(f"rank {r}: {k}" for r, k in enumerate(keys))
        raise RuntimeError(
            f"processes computed different cache fingerprints ({listing}): every process must load the same "
            "model, processor and dataset"
        )
    embeddings = part if part.complete else _assemble(part.directory)
    return DistributedEncoding(embeddings, part.directory.name, [rows for _, rows in gathered], seconds)
