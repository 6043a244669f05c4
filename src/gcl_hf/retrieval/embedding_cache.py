"""On-disk cache of dataset embeddings, keyed by what determines them, resumable and verified shard by shard.

:func:`encode_corpus` writes ``[N, D]`` float32 embeddings as ``.npy`` shards under
``cache_dir/<key>/``, where the key hashes the model weights and config, the processor's
configuration and kwargs, and the dataset's identity (its length, columns and ids). What the rows *hold* is
keyed shard by shard: each shard's sidecar records the digest of its rows' texts and image bytes (image files
are read, so a picture replaced under the same name is re-encoded, and only its shard). A
second call with the same inputs reads the shards (memory-mapped, so a pool larger than RAM is
fine); a call interrupted mid-way resumes at the first missing shard. Several processes may split the
shards (``process_index`` / ``num_processes``) and a final call in any process assembles them.

Every shard ``shard_NNNNN.npy`` has a sidecar ``shard_NNNNN.json`` written after it: the sha256 of the
shard file, its row range, the ids of its rows (the dataset's ``id`` column, else the row numbers), its shape
and dtype. Both are written to a temporary name and renamed, so a crash never leaves a truncated file behind.
A shard is reused only if its sidecar is there, its checksum, rows, ids, shape and dtype match and every value
is finite; otherwise it is re-encoded with a warning that names it and why (``load_cached`` leaves it out and
says why in ``problems``). Reading therefore costs one pass over the shard files (far less than encoding).
Non-finite embeddings are never written: encoding raises an error naming the shard, the row and its id.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from gcl_hf.atomic import atomic_write  # also re-exported here, where it used to live
from gcl_hf.errors import RecordError
from gcl_hf.retrieval.fingerprints import (hasher, dataset_fingerprint, dataset_identity, model_fingerprint,
                                           processor_fingerprint, rows_content_digest)
from gcl_hf.retrieval.encoding import EncodingError, encode_dataset
from gcl_hf.retrieval.options import EncodeOptions

__all__ = ["CorpusEmbeddings", "EmbeddingCacheError", "cache_key", "dataset_fingerprint", "encode_corpus", "load_cached",
           "model_fingerprint", "processor_fingerprint", "write_embeddings", "atomic_write"]

logger = logging.getLogger(__name__)

#: Bumped when the cache layout or the encoding semantics change (2: per-shard sidecars with checksums and ids;
#: 3: fingerprints stable across save/load, SigLIP texts padded as in training; 4: the key holds the dataset's
#: identity, each sidecar the digest of its rows' content, image bytes included).
CACHE_VERSION = 4
#: the ``format`` of a cache's ``meta.json``: what marks a directory as gcl-hf's own
CACHE_FORMAT = "gcl-embedding-cache"


def cache_key(model: torch.nn.Module, processor: Any, dataset: datasets.Dataset,
              processor_kwargs: dict[str, Any] | None = None) -> str:
    """The cache directory name for these inputs (model and processor fingerprints, processor kwargs, the
    dataset's identity: length, columns, ids; the rows' content is checked shard by shard)."""
    h = hasher()
    for part in (f"v{CACHE_VERSION}", model_fingerprint(model), processor_fingerprint(processor),
                 dataset_identity(dataset), json.dumps(processor_kwargs or {}, sort_keys=True, default=repr)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


#: why a shard whose rows changed (an edited text, a replaced image file) is re-encoded
CONTENT_CHANGED = "the texts or image bytes of its rows changed since it was encoded"


class EmbeddingCacheError(RecordError):
    """A cache file that cannot be used (unreadable metadata, a shard that does not match its sidecar)."""


@dataclass
class CorpusEmbeddings:
    """Cached embeddings: ``shards`` (read-only memory-mapped ``[n_i, D]`` float32 arrays, in row
    order), where they live, and how many rows this call had to encode (0 when all were cached).
    ``complete`` is False when a shard is absent or failed verification (``missing`` names those shards,
    ``problems`` says why for each that exists but cannot be used), or for a process of a multi-process run
    whose peers have not finished: ``shards`` then holds just the shards that passed so far."""

    shards: list[np.ndarray]
    directory: Path
    num_rows: int
    dim: int
    encoded_rows: int
    complete: bool = True
    missing: tuple[str, ...] = ()
    problems: dict[str, str] = field(default_factory=dict)

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


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _sha256(path: Path) -> str:
    return _hash_and_scan(path)[0]


def _hash_and_scan(path: Path) -> tuple[str, int | None]:
    """``(sha256 of the file, first row holding a NaN/inf or None)`` in one read of a float32 ``.npy`` shard (the
    two checks a reused shard needs, without reading a large pool twice; other dtypes are not scanned)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(fh)
            scan = dtype == np.float32 and not fortran and len(shape) == 2 and shape[1] > 0
            offset, row_bytes = fh.tell(), (shape[1] * 4 if scan else 0)
        except ValueError:  # not an .npy: only hashed (the caller's np.load reports it)
            scan, offset, row_bytes = False, 0, 0
        fh.seek(0)
        position, pending, row, first = 0, b"", 0, None
        for block in iter(lambda: fh.read(1 << 24), b""):
            h.update(block)
            data = block[max(0, offset - position):] if position + len(block) > offset else b""
            position += len(block)
            if scan and first is None and data:
                buffer = pending + data
                usable = len(buffer) - len(buffer) % row_bytes
                rows = np.frombuffer(buffer[:usable], dtype=np.float32).reshape(-1, row_bytes // 4)
                finite = np.isfinite(rows).all(axis=1)
                if not finite.all():
                    first = row + int(np.argmin(finite))
                row, pending = row + len(rows), buffer[usable:]
    return h.hexdigest(), first


def _row_ids(dataset: datasets.Dataset, start: int, stop: int) -> list[Any]:
    """The ids of rows ``start:stop`` as JSON values (the ``id`` column, else the row numbers)."""
    if "id" not in dataset.column_names:
        return list(range(start, stop))
    ids = dataset.select_columns(["id"]).with_format(None)[start:stop]["id"]
    return json.loads(json.dumps(ids, default=str))


def _first_non_finite(array: np.ndarray, block: int = 8192) -> int | None:
    """Index of the first row holding a NaN/inf (scanned in blocks, so memory maps stay lazy), else None."""
    for begin in range(0, len(array), block):
        finite = np.isfinite(np.asarray(array[begin:begin + block])).all(axis=1)
        if not finite.all():
            return begin + int(np.argmin(finite))
    return None


def _write_shard(path: Path, array: np.ndarray, start: int, ids: list[Any], content: str | None = None) -> None:
    """Write a shard, then its sidecar; refuse non-finite rows (naming the shard, row and id)."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    bad = _first_non_finite(array)
    if bad is not None:
        raise EncodingError("embedding is not finite (NaN/inf); nothing written for this shard (check the model "
                            "weights and this row's input)", source=path, row=f"row {start + bad}, id {ids[bad]!r}")
    for stale in (_sidecar(path), path):  # a crash between the two writes leaves a shard without sidecar: re-encoded
        stale.unlink(missing_ok=True)
    atomic_write(path, lambda fh: np.save(fh, array))
    meta = {"version": CACHE_VERSION, "start": start, "stop": start + len(array), "shape": list(array.shape),
            "dtype": str(array.dtype), "sha256": _sha256(path), "ids": ids, "content": content}
    atomic_write(_sidecar(path), lambda fh: fh.write(json.dumps(meta).encode()))


def _verify_shard(path: Path, start: int, stop: int, ids: list[Any] | None,
                  content: str | None = None) -> tuple[np.ndarray | None, str]:
    """``(shard, "")`` if the shard at ``path`` may be reused for rows ``start:stop`` (with these ``ids`` and rows'
    ``content`` digest when given), else ``(None, why)``; ``why`` is empty when the shard is simply absent."""
    if not path.exists():
        return None, ""
    sidecar = _sidecar(path)
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        shape, dtype, recorded = tuple(meta["shape"]), str(meta["dtype"]), (int(meta["start"]), int(meta["stop"]))
        digest, held = str(meta["sha256"]), list(meta["ids"])
    except FileNotFoundError:
        return None, f"no sidecar {sidecar.name} (written by an interrupted run or an older gcl-hf)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"unreadable sidecar {sidecar.name} ({type(exc).__name__}: {exc})"
    if recorded != (start, stop):
        return None, (f"holds rows {recorded[0]}-{recorded[1] - 1}, expected rows {start}-{stop - 1} "
                      "(shard files moved or swapped)")
    if len(held) != stop - start or shape[:1] != (stop - start,):
        return None, f"sidecar lists {len(held)} ids and shape {list(shape)} for {stop - start} rows"
    if ids is not None and held != ids:
        i = next(i for i, (a, b) in enumerate(zip(held, ids)) if a != b)
        return None, f"ids differ from the dataset's: row {start + i} holds id {held[i]!r}, the dataset has {ids[i]!r}"
    if content is not None and meta.get("content") != content:
        return None, CONTENT_CHANGED
    actual, bad = _hash_and_scan(path)  # one read: checksum and finiteness
    if actual != digest:
        return None, "sha256 checksum mismatch: the file changed after it was written"
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        return None, f"unreadable ({exc})"
    if array.ndim != 2 or array.shape != shape or str(array.dtype) != dtype or array.dtype != np.float32:
        return None, f"shape {list(array.shape)} {array.dtype}, expected {list(shape)} float32"
    if bad is not None:
        return None, f"row {start + bad} (id {held[bad]!r}) is not finite (NaN/inf)"
    return array, ""


def _read_meta(meta_path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        int(meta["num_rows"]), int(meta["shard_size"])
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EmbeddingCacheError(f"corrupt embedding cache metadata ({type(exc).__name__}: {exc}); "
                                  "run encode_corpus (or gcl-hf encode) again to rebuild it", source=meta_path) from exc
    return meta


def _prepare_meta(meta_path: Path, num_rows: int, shard_size: int) -> None:
    """Check (or write) ``meta.json``; a missing or corrupt one is rebuilt, since every shard is verified on its own."""
    try:
        old = _read_meta(meta_path)
    except FileNotFoundError:
        if any(meta_path.parent.glob("shard_*.npy")):
            logger.warning("%s is missing but the directory holds shards: rebuilding it (each shard is checked "
                           "against its own sidecar and the dataset's ids before reuse)", meta_path)
        old = None
    except EmbeddingCacheError as exc:
        logger.warning("%s; rebuilding it (each shard is checked against its own sidecar before reuse)", exc)
        old = None
    if old is not None:
        if int(old["shard_size"]) != shard_size or int(old["num_rows"]) != num_rows:
            raise ValueError(
                f"{meta_path}: cache written with shard_size={old['shard_size']} for {old['num_rows']} rows; "
                f"got shard_size={shard_size} for {num_rows} rows (use the same shard_size or another cache_dir)"
            )
        return
    meta = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "num_rows": num_rows, "shard_size": shard_size}
    atomic_write(meta_path, lambda fh: fh.write(json.dumps(meta).encode()))


def write_embeddings(directory: str | os.PathLike, embeddings: np.ndarray | Sequence[np.ndarray], ids: Sequence[Any],
                     shard_size: int | None = None) -> Path:
    """Write ready ``[N, D]`` embeddings (one array, or consecutive shards) with their ``ids`` in the cache layout
    (``meta.json`` + verified ``shard_*.npy`` with sidecars), so :func:`load_cached` reads them back checked."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    parts = [np.asarray(embeddings)] if isinstance(embeddings, np.ndarray) else [np.asarray(a) for a in embeddings]
    total = sum(len(a) for a in parts)
    if total != len(ids):
        raise ValueError(f"{total} embeddings for {len(ids)} ids")
    array = np.concatenate(parts) if len(parts) > 1 else parts[0]
    shard_size = shard_size or max(1, total)
    _prepare_meta(directory / "meta.json", total, shard_size)
    for n, start in enumerate(range(0, total, shard_size)):
        stop = min(start + shard_size, total)
        _write_shard(_shard_path(directory, n), array[start:stop], start, [ids[i] for i in range(start, stop)])
    return directory


def encode_corpus(
    model: Any,
    processor: Any,
    dataset: datasets.Dataset,
    options: EncodeOptions | None = None,
    *,
    process_index: int = 0,
    num_processes: int = 1,
    desc: str = "encoding corpus",
    **overrides: Any,
) -> CorpusEmbeddings:
    """Embed ``dataset`` (see :func:`~gcl_hf.retrieval.encoding.encode_dataset`) through the on-disk cache.

    ``options`` (:class:`~gcl_hf.retrieval.options.EncodeOptions`) with ``overrides`` (its field names, e.g.
    ``cache_dir=..., batch_size=8``) applied; ``cache_dir`` is required, ``distributed`` is not read here (see
    :func:`~gcl_hf.retrieval.distributed_encoding.encode_corpus_distributed`).
    Shards of ``shard_size`` rows already in ``cache_dir/<cache_key>/`` are reused when they pass verification
    (checksum, rows, ids, shape, finite values); missing or failing ones are encoded and written one at a time.
    With ``num_processes > 1`` this process encodes only shards ``n`` with ``n % num_processes == process_index``;
    the returned object then holds every verified shard already present (call again, e.g. after a barrier, to
    get the full set).
    """
    options = EncodeOptions.resolve(options, **overrides)
    if options.cache_dir is None:
        raise ValueError("encode_corpus needs a cache_dir (EncodeOptions.cache_dir or cache_dir=...); "
                         "encode_dataset encodes in memory")
    if not 0 <= process_index < num_processes:
        raise ValueError(f"process_index {process_index} not in [0, {num_processes})")
    key = cache_key(model, processor, dataset, options.processor_kwargs)
    directory = Path(options.cache_dir) / key
    directory.mkdir(parents=True, exist_ok=True)
    _prepare_meta(directory / "meta.json", len(dataset), options.shard_size)

    num_shards, encoded = -(-len(dataset) // options.shard_size), 0
    shards: dict[int, np.ndarray] = {}
    problems: dict[str, str] = {}
    for n, start, stop, path in _shards(directory, len(dataset), options.shard_size):
        ids = _row_ids(dataset, start, stop)
        content = rows_content_digest(dataset, start, stop, options.image_root)
        shard, why = _verify_shard(path, start, stop, ids, content)
        if shard is not None:
            shards[n] = shard
            continue
        if n % num_processes != process_index:
            if why:
                problems[path.name] = why
            continue
        if why:
            (logger.info if why == CONTENT_CHANGED else logger.warning)("%s: %s; re-encoding it", path, why)
        emb = encode_dataset(model, processor, dataset, rows=np.arange(start, stop),
                             desc=f"{desc} [{n + 1}/{num_shards}]", **options.dataset_kwargs())
        _write_shard(path, emb.numpy(), start, ids, content)
        shards[n] = np.load(path, mmap_mode="r")
        encoded += stop - start
    missing = tuple(_shard_path(directory, n).name for n in range(num_shards) if n not in shards)
    ordered = [shards[n] for n in sorted(shards)]
    dim = int(ordered[0].shape[1]) if ordered else int(getattr(model, "embedding_dim", 0))
    rows = len(dataset) if not missing else sum(len(s) for s in ordered)
    return CorpusEmbeddings(ordered, directory, rows, dim, encoded_rows=encoded, complete=not missing,
                            missing=missing, problems=problems)


def load_cached(directory: str | os.PathLike) -> CorpusEmbeddings:
    """The embeddings of one cache directory (``cache_dir/<key>``, as :func:`encode_corpus` writes it), each
    verified shard memory-mapped. Shards that are absent or fail verification (checksum, row range, shape,
    dtype, non-finite values) are left out and named in ``missing`` (with the reason in ``problems``);
    ``complete`` is then False and ``num_rows`` counts the rows present. A corrupt ``meta.json`` raises
    `EmbeddingCacheError` naming it."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: no such file (not an embedding cache directory, or its metadata "
                                "was deleted: run encode_corpus again to rebuild it)")
    meta = _read_meta(meta_path)
    num_rows, shard_size = int(meta["num_rows"]), int(meta["shard_size"])
    shards, missing, problems = [], [], {}
    for _, start, stop, path in _shards(directory, num_rows, shard_size):
        shard, why = _verify_shard(path, start, stop, None)
        if shard is None:
            missing.append(path.name)
            if why:
                problems[path.name] = why
        else:
            shards.append(shard)
    dim = int(shards[0].shape[1]) if shards else 0
    rows = num_rows if not missing else sum(len(s) for s in shards)
    return CorpusEmbeddings(shards, directory, rows, dim, encoded_rows=0, complete=not missing,
                            missing=tuple(missing), problems=problems)


def _shards(directory: Path, num_rows: int, shard_size: int) -> Iterator[tuple[int, int, int, Path]]:
    """``(n, start, stop, path)`` of each shard of a cache of ``num_rows`` rows."""
    for n in range(-(-num_rows // shard_size)):
        yield n, n * shard_size, min((n + 1) * shard_size, num_rows), _shard_path(directory, n)


def shard_sidecars(directory: str | os.PathLike) -> tuple[list[Any], list[str]]:
    """``(ids, sha256s)`` recorded in a cache directory's shard sidecars, in row order (what an index compares
    its documents and its recorded digest with). Call after :func:`load_cached` found the cache complete."""
    directory = Path(directory)
    meta = _read_meta(directory / "meta.json")
    ids: list[Any] = []
    digests: list[str] = []
    for _, _, _, path in _shards(directory, int(meta["num_rows"]), int(meta["shard_size"])):
        sidecar = json.loads(_sidecar(path).read_text(encoding="utf-8"))
        ids += sidecar["ids"]
        digests.append(str(sidecar["sha256"]))
    return ids, digests
