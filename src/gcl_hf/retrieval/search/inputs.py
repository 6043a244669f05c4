"""Inputs of the exact search: queries and corpus shards as tensors or arrays, chunks, exclusions, gathers.

The corpus may be one ``[N, D]`` tensor/array or a list of shards (e.g. memory-mapped cache files); it is
read one chunk at a time, so the search never holds more of it than a chunk per thread.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

Array = torch.Tensor | np.ndarray
#: Per-query corpus indices to drop from the ranking: a sequence (one iterable per query), a
#: mapping query index -> iterable, or an int tensor/array of ``(query, corpus)`` pairs ``[P, 2]``.
Exclude = Sequence[Iterable[int]] | Mapping[int, Iterable[int]] | torch.Tensor | np.ndarray | None


def as_tensor(x: Array, name: str) -> torch.Tensor:
    """A tensor view of ``x`` (numpy arrays, read-only memory maps included, are not copied)."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if not x.flags.writeable:  # read-only memmaps: torch warns but never writes to them here
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                return torch.from_numpy(x)
        return torch.from_numpy(x)
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def shards_of(corpus: Array | Sequence[Array]) -> list[Array]:
    """The corpus as a list of ``[N_i, D]`` shards."""
    if isinstance(corpus, (torch.Tensor, np.ndarray)):
        return [corpus]
    if isinstance(corpus, (list, tuple)):
        return list(corpus)
    raise TypeError(f"corpus_embeds must be a tensor, an array or a list of them, got {type(corpus).__name__}")


@dataclass(frozen=True)
class ChunkSpec:
    """Rows ``[start, stop)`` of shard ``shard``; ``offset`` is the global index of row ``start``."""

    shard: int
    start: int
    stop: int
    offset: int


def chunk_specs(shards: list[Array], chunk_size: int, dim: int) -> list[ChunkSpec]:
    """Every chunk of every shard, in corpus order (shapes are checked here, before any work)."""
    specs = []
    offset = 0
    for n, shard in enumerate(shards):
        if shard.ndim != 2 or shard.shape[1] != dim:
            raise ValueError(f"corpus shard {n} has shape {tuple(shard.shape)}; expected [*, {dim}]")
        rows = int(shard.shape[0])
        specs.extend(ChunkSpec(n, s, min(s + chunk_size, rows), offset + s) for s in range(0, rows, chunk_size))
        offset += rows
    return specs


def load_chunk(shards: list[Array], spec: ChunkSpec, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The ``[rows, D]`` chunk ``spec`` on ``device`` in ``dtype``."""
    block = as_tensor(shards[spec.shard][spec.start:spec.stop], f"corpus shard {spec.shard}")
    return block.to(device=device, dtype=dtype, non_blocking=True)


def gather_rows(shards: list[Array], index: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Corpus rows at global indices ``index`` (any order, repeats allowed) as one ``[len(index), D]`` tensor."""
    index = index.to("cpu", torch.int64)
    if len(shards) == 1:
        shard = shards[0]
        if isinstance(shard, torch.Tensor):
            return shard.index_select(0, index.to(shard.device)).to("cpu", dtype)
        order = torch.argsort(index)  # sorted reads: kind to memory maps
        rows = torch.from_numpy(np.ascontiguousarray(shard[index[order].numpy()])).to(dtype)
        out = torch.empty_like(rows)
        out[order] = rows
        return out
    sizes = torch.tensor([int(s.shape[0]) for s in shards], dtype=torch.int64)
    starts = torch.cumsum(sizes, 0) - sizes
    which = torch.searchsorted(starts, index, right=True) - 1
    out = None
    for n, shard in enumerate(shards):
        sel = (which == n).nonzero().squeeze(1)
        if sel.numel() == 0:
            continue
        rows = gather_rows([shard], index[sel] - starts[n], dtype)
        if out is None:
            out = torch.empty((index.numel(), rows.shape[1]), dtype=dtype)
        out[sel] = rows
    if out is None:
        dim = int(shards[0].shape[1])
        out = torch.empty((0, dim), dtype=dtype)
    return out


def exclude_pairs(exclude: Exclude, num_queries: int, device: torch.device) -> torch.Tensor | None:
    """``[P, 2]`` int64 (query, corpus) pairs, sorted by corpus index."""
    if exclude is None:
        return None
    if isinstance(exclude, (torch.Tensor, np.ndarray)):
        pairs = torch.as_tensor(exclude, dtype=torch.int64).reshape(-1, 2)
    else:
        items = exclude.items() if isinstance(exclude, Mapping) else enumerate(exclude)
        rows: list[int] = []
        cols: list[int] = []
        for q, ids in items:
            if ids is None:
                continue
            ids = list(ids)
            rows.extend([int(q)] * len(ids))
            cols.extend(int(i) for i in ids)
        pairs = torch.tensor([rows, cols], dtype=torch.int64).T.reshape(-1, 2)
    if pairs.numel() and (pairs[:, 0].min() < 0 or pairs[:, 0].max() >= num_queries):
        raise ValueError(f"exclude names a query index outside [0, {num_queries})")
    order = torch.argsort(pairs[:, 1], stable=True)
    return pairs[order].to(device)


def pairs_in(pairs: torch.Tensor | None, lo: int, hi: int, column: int = 0) -> torch.Tensor | None:
    """The pairs whose ``column`` lies in ``[lo, hi)``, that column shifted by ``-lo`` (None if none)."""
    if pairs is None or pairs.numel() == 0:
        return None
    sel = pairs[(pairs[:, column] >= lo) & (pairs[:, column] < hi)].clone()
    if sel.numel() == 0:
        return None
    sel[:, column] -= lo
    return sel


def pairs_of_subset(pairs: torch.Tensor | None, select: torch.Tensor, num_queries: int) -> torch.Tensor | None:
    """The pairs of the queries ``select`` (indices into ``num_queries``), their query renumbered to the
    position in ``select``; the order (by corpus index) is kept. None if none."""
    if pairs is None or pairs.numel() == 0:
        return None
    position = torch.full((num_queries,), -1, dtype=torch.int64)
    position[select] = torch.arange(select.numel())
    mapped = position[pairs[:, 0]]
    keep = mapped >= 0
    return torch.stack([mapped[keep], pairs[keep, 1]], dim=1) if bool(keep.any()) else None


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[int]:
    """``torch.set_num_threads(n)`` for the block (yields the previous count, restored afterwards). Small
    ops gain nothing from OpenMP and, on a busy machine, wait at its barriers; new Python threads call
    this too, since OpenMP's thread count is a per-thread setting."""
    previous = torch.get_num_threads()
    if n != previous:
        torch.set_num_threads(n)
    try:
        yield previous
    finally:
        if n != previous:
            torch.set_num_threads(previous)
