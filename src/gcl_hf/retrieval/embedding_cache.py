"""On-disk cache of dataset embeddings, keyed by what determines them, resumable shard by shard.

:func:`encode_corpus` writes ``[N, D]`` float32 embeddings as ``.npy`` shards under
``cache_dir/<key>/``, where the key hashes the model weights and config, the processor's
configuration and the dataset's content (the columns encoding reads: ``id``, ``text``, ``image``,
``modality``, ``frames``, ``frame_weights``; image *paths* are hashed, not the image files). A
second call with the same inputs reads the shards (memory-mapped, so a pool larger than RAM is
fine); a call interrupted mid-way resumes at the first missing shard. Shards are written to a
temporary name and renamed, so a crash never leaves a truncated shard behind. Several processes may split the shards (``process_index`` /
``num_processes``) and a final call in any process assembles them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from gcl_hf.retrieval.encoding import encode_dataset

__all__ = ["CorpusEmbeddings", "cache_key", "dataset_fingerprint", "encode_corpus", "load_cached",
           "model_fingerprint", "processor_fingerprint"]

#: Bumped when the cache layout or the encoding semantics change.
CACHE_VERSION = 1
_COLUMNS = ("id", "text", "image", "modality", "frames", "frame_weights")


def _hasher() -> Any:
    return hashlib.blake2b(digest_size=16)


def model_fingerprint(model: torch.nn.Module) -> str:
    """Hash of the model's class, config and every parameter/buffer (names, dtypes, shapes, bytes)."""
    h = _hasher()
    h.update(type(model).__qualname__.encode())
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_json_string"):
        h.update(config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def processor_fingerprint(processor: Any) -> str:
    """Hash of a processor's configuration: image-processor settings and the tokenizer's vocabulary
    and options (anything that changes the model inputs)."""
    h = _hasher()
    h.update(type(processor).__qualname__.encode())
    parts: list[Any] = [processor] + [getattr(processor, a, None) for a in ("image_processor", "tokenizer")]
    for part in parts:
        if part is None:
            continue
        backend = getattr(part, "backend_tokenizer", None)
        if backend is not None:
            h.update(backend.to_str().encode())
        for attr in ("model_max_length", "padding_side", "truncation_side"):
            if hasattr(part, attr):
                h.update(f"{attr}={getattr(part, attr)!r}".encode())
        if part is not processor and hasattr(part, "to_dict"):
            try:
                h.update(json.dumps(part.to_dict(), sort_keys=True, default=repr).encode())
            except Exception:  # noqa: BLE001 - some tokenizers' to_dict is partial; the backend is hashed
                pass
    return h.hexdigest()


def dataset_fingerprint(dataset: datasets.Dataset) -> str:
    """Hash of the content of the columns that encoding reads (``id``, ``text``, ``image``, ``modality``,
    ``frames``, ``frame_weights``)."""
    h = _hasher()
    columns = [c for c in _COLUMNS if c in dataset.column_names]
    h.update(f"{len(dataset)}|{columns}".encode())
    arrow = dataset.select_columns(columns).with_format("arrow")
    for batch in arrow.iter(batch_size=65536):
        for name in columns:
            for chunk in _arrow_chunks(batch.column(name)):
                h.update(f"{name}|{chunk.type}|{chunk.offset}|{len(chunk)}".encode())
                for buffer in chunk.buffers():
                    if buffer is not None:
                        h.update(memoryview(buffer))
    return h.hexdigest()


def _arrow_chunks(column: Any) -> Iterator[Any]:
    chunks = getattr(column, "chunks", None)
    return iter(chunks if chunks is not None else [column])


def cache_key(model: torch.nn.Module, processor: Any, dataset: datasets.Dataset,
              processor_kwargs: dict[str, Any] | None = None) -> str:
    """The cache directory name for these inputs (model, processor, dataset fingerprints)."""
    h = _hasher()
    for part in (f"v{CACHE_VERSION}", model_fingerprint(model), processor_fingerprint(processor),
                 dataset_fingerprint(dataset), json.dumps(processor_kwargs or {}, sort_keys=True, default=repr)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


@dataclass
class CorpusEmbeddings:
    """Cached embeddings: ``shards`` (read-only memory-mapped ``[n_i, D]`` float32 arrays, in row
    order), where they live, and how many rows this call had to encode (0 when all were cached).
    ``complete`` is False only for a process of a multi-process run whose peers have not finished:
    ``shards`` then holds just the shards present so far and ``missing`` names the others."""

    shards: list[np.ndarray]
    directory: Path
    num_rows: int
    dim: int
    encoded_rows: int
    complete: bool = True
    missing: tuple[str, ...] = ()

    def __len__(self) -> int:
        return self.num_rows

    def to_numpy(self) -> np.ndarray:
        """All rows in one in-memory array (for pools that fit in memory)."""
        if not self.shards:
            return np.empty((0, self.dim), dtype=np.float32)
        return np.concatenate([np.asarray(s) for s in self.shards], axis=0)

    def to_tensor(self) -> torch.Tensor:
        return torch.from_numpy(self.to_numpy())


def _shard_path(directory: Path, n: int) -> Path:
    return directory / f"shard_{n:05d}.npy"


def _read_shard(path: Path, rows: int) -> np.ndarray | None:
    """The shard if it exists and is complete (right row count), else ``None``."""
    if not path.exists():
        return None
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    return array if array.ndim == 2 and array.shape[0] == rows and array.dtype == np.float32 else None


def _write_shard(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array, dtype=np.float32))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def encode_corpus(
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
    process_index: int = 0,
    num_processes: int = 1,
    show_progress: bool = True,
    desc: str = "encoding corpus",
) -> CorpusEmbeddings:
    """Embed ``dataset`` (see :func:`~gcl_hf.retrieval.encoding.encode_dataset`) through the on-disk cache.

    Shards of ``shard_size`` rows already in ``cache_dir/<cache_key>/`` are reused; missing ones are
    encoded and written one at a time. With ``num_processes > 1`` this process encodes only shards
    ``n`` with ``n % num_processes == process_index``; the returned object then holds every shard
    already present (call again, e.g. after a barrier, to get the full set).
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if not 0 <= process_index < num_processes:
        raise ValueError(f"process_index {process_index} not in [0, {num_processes})")
    key = cache_key(model, processor, dataset, processor_kwargs)
    directory = Path(cache_dir) / key
    directory.mkdir(parents=True, exist_ok=True)
    meta_path = directory / "meta.json"
    meta = {"version": CACHE_VERSION, "num_rows": len(dataset), "shard_size": shard_size}
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("shard_size") != shard_size or old.get("num_rows") != len(dataset):
            raise ValueError(
                f"{meta_path}: cache written with shard_size={old.get('shard_size')} for {old.get('num_rows')} rows; "
                f"got shard_size={shard_size} for {len(dataset)} rows (use the same shard_size or another cache_dir)"
            )
    else:
        tmp = meta_path.with_name(f".meta.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, meta_path)

    num_shards, encoded = -(-len(dataset) // shard_size), 0
    for n, start, stop, path in _shards(directory, len(dataset), shard_size):
        if n % num_processes != process_index or _read_shard(path, stop - start) is not None:
            continue
        emb = encode_dataset(
            model, processor, dataset, image_root=image_root, batch_size=batch_size, num_workers=num_workers,
            device=device, rows=np.arange(start, stop), processor_kwargs=processor_kwargs,
            show_progress=show_progress, desc=f"{desc} [{n + 1}/{num_shards}]",
        )
        _write_shard(path, emb.numpy())
        encoded += stop - start
    cached = load_cached(directory)
    return replace(cached, encoded_rows=encoded, dim=cached.dim or int(getattr(model, "embedding_dim", 0)))


def load_cached(directory: str | os.PathLike) -> CorpusEmbeddings:
    """The embeddings of one cache directory (``cache_dir/<key>``, as :func:`encode_corpus` writes it), each
    complete shard memory-mapped. Incomplete or missing shards are left out and named in ``missing``
    (``complete`` is then False and ``num_rows`` counts the rows present)."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{directory}: no meta.json (not an embedding cache directory)")
    meta = json.loads(meta_path.read_text())
    num_rows, shard_size = int(meta["num_rows"]), int(meta["shard_size"])
    shards, missing = [], []
    for _, start, stop, path in _shards(directory, num_rows, shard_size):
        shard = _read_shard(path, stop - start)
        if shard is None:
            missing.append(path.name)
        else:
            shards.append(shard)
    dim = int(shards[0].shape[1]) if shards else 0
    rows = num_rows if not missing else sum(len(s) for s in shards)
    return CorpusEmbeddings(shards, directory, rows, dim, encoded_rows=0, complete=not missing,
                            missing=tuple(missing))


def _shards(directory: Path, num_rows: int, shard_size: int) -> Iterator[tuple[int, int, int, Path]]:
    """``(n, start, stop, path)`` of each shard of a cache of ``num_rows`` rows."""
    for n in range(-(-num_rows // shard_size)):
        yield n, n * shard_size, min((n + 1) * shard_size, num_rows), _shard_path(directory, n)
