"""What a cache or an index is keyed on: fingerprints of a model (its weights and the config that changes what it
computes), a processor (what it does to inputs) and a retrieval dataset (the columns encoding reads), and the
*content* digest of rows: their texts and the bytes of their images, image files included (a file replaced
under the same name changes it). Stable across a save/load round trip and across calls of the processor."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

import datasets
import torch

from gcl_hf.data.images import resolve_image_path

__all__ = ["dataset_fingerprint", "dataset_identity", "file_digest", "model_fingerprint", "processor_fingerprint",
           "rows_content_digest"]

#: the dataset columns encoding reads
ENCODED_COLUMNS = ("id", "text", "image", "modality", "frames", "frame_weights")


def hasher() -> Any:
    return hashlib.blake2b(digest_size=16)

_VOLATILE_CONFIG = frozenset({"_name_or_path", "architectures", "dtype", "torch_dtype", "transformers_version",
                              "_commit_hash", "_attn_implementation_autoset"})


def _stable_config(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable_config(v) for k, v in sorted(value.items()) if k not in _VOLATILE_CONFIG}
    if isinstance(value, (list, tuple)):
        return [_stable_config(v) for v in value]
    return value


def model_fingerprint(model: torch.nn.Module) -> str:
    """Hash of what a model computes: its class, its config (less the keys a save/load round trip changes:
    ``_name_or_path``, ``architectures``, ``dtype``, ...) and every parameter/buffer's name, dtype, shape and
    bytes. The same weights give the same fingerprint in memory, saved, reloaded or pulled from the Hub."""
    h = hasher()
    h.update(type(model).__qualname__.encode())
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        h.update(json.dumps(_stable_config(config.to_dict()), sort_keys=True, default=repr).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def processor_fingerprint(processor: Any) -> str:
    """Hash of a processor's configuration: image-processor settings and the tokenizer's vocabulary
    and options (anything that changes the model inputs)."""
    h = hasher()
    h.update(type(processor).__qualname__.encode())
    parts: list[Any] = [processor] + [getattr(processor, a, None) for a in ("image_processor", "tokenizer")]
    for part in parts:
        if part is None:
            continue
        backend = getattr(part, "backend_tokenizer", None)
        if backend is not None:
            # the backend's "truncation"/"padding" sections are per-call state that every processor call rewrites
            state = json.loads(backend.to_str())
            h.update(json.dumps({k: v for k, v in state.items() if k not in ("truncation", "padding")},
                                sort_keys=True).encode())
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
    h = hasher()
    columns = [c for c in ENCODED_COLUMNS if c in dataset.column_names]
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


#: (path, size, mtime_ns, ctime_ns, inode) -> digest, for this process only: a file is hashed once per run
_FILE_DIGESTS: dict[tuple[str, int, int, int, int], str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """Hash of a file's bytes (streamed), or ``"missing:<path>"`` when it cannot be read (encoding
    then reports it). Memoised per process on the file's size, times and inode, never across runs."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return f"missing:{path}"
    key = (path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    digest = _FILE_DIGESTS.get(key)
    if digest is None:
        try:
            with open(path, "rb") as fh:
                digest = _FILE_DIGESTS[key] = _stream_digest(fh)
        except OSError:
            return f"missing:{path}"
    return digest


def _stream_digest(fh: Any) -> str:
    if hasattr(hashlib, "file_digest"):  # Python >= 3.11: the read loop in C
        return hashlib.file_digest(fh, hasher).hexdigest()
    h = hasher()
    for block in iter(lambda: fh.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()


def _image_content(value: Any, root: str | None) -> Any:
    """An image cell as what it shows: bytes hashed, a path replaced by its file's digest."""
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data is not None:
            return {"bytes": hashlib.blake2b(bytes(data), digest_size=16).hexdigest()}
        value = path
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": hashlib.blake2b(bytes(value), digest_size=16).hexdigest()}
    if isinstance(value, (str, os.PathLike)) and os.fspath(value):
        return {"file": file_digest(resolve_image_path(value, root))}
    if isinstance(value, (list, tuple)):  # frames
        return [_image_content(v, root) for v in value]
    return value


def rows_content_digest(dataset: datasets.Dataset, start: int, stop: int, image_root: str | None = None) -> str:
    """Hash of what encoding reads from rows ``start:stop``: their text, modality and frame weights, and the bytes
    of their images and frames (image files read from disk, relative paths resolved against ``image_root``), so
    a picture replaced under the same name changes it."""
    h = hasher()
    columns = [c for c in ENCODED_COLUMNS if c in dataset.column_names]
    rows = dataset.select_columns(columns).with_format(None)[start:stop]
    h.update(repr(columns).encode())
    for c in ("image", "frames"):
        if c in rows:
            rows[c] = [_image_content(v, image_root) for v in rows[c]]
    for i in range(stop - start):
        h.update(repr(tuple(rows[c][i] for c in columns)).encode())
        h.update(b"\0")
    return h.hexdigest()


def dataset_identity(dataset: datasets.Dataset) -> str:
    """Hash of a dataset's shape: its length, the encoded columns present and its ``id`` column (not its content,
    which :func:`rows_content_digest` keys shard by shard, so an edited file re-encodes only its shard)."""
    h = hasher()
    columns = [c for c in ENCODED_COLUMNS if c in dataset.column_names]
    h.update(f"{len(dataset)}|{columns}".encode())
    if "id" in columns:
        for batch in dataset.select_columns(["id"]).with_format("arrow").iter(batch_size=65536):
            h.update(json.dumps(batch.column("id").to_pylist(), default=str).encode())
    return h.hexdigest()
