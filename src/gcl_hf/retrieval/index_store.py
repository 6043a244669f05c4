"""How a `GCLIndex` directory is owned, written and verified: one owner for the rules that keep a save from
touching the user's files and a load from serving vectors that are not the documents'.

- *Ownership*: a directory is gcl-hf's own when it is absent or empty, holds a ``gcl_index.json`` of this format,
  or is an embedding cache (its ``meta.json`` says so), and holds nothing but index files. Anything else is
  the user's: a save into it is refused with the path named, nothing is deleted or overwritten.
- *Atomic save*: the whole index is written into a hidden folder beside the target, then swapped in one
  ``renameat2(RENAME_EXCHANGE)`` (two renames where the kernel lacks it; :func:`gcl_hf.atomic.atomic_replace_dir`);
  concurrent saves each swap a whole index in, so their parts never mix and a reader never sees half of one.
- *Integrity*: ``gcl_index.json`` records a digest of its own fields, the ids of the documents and the sha256
  of every shard; a load recomputes it, so a hand-edited field, documents edited apart from their shards, or
  one index's metadata beside another's embeddings is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from gcl_hf.atomic import atomic_replace_dir, temporary_name

__all__ = ["IndexFormatError", "check_fields", "integrity_digest", "link_cache_files", "normalised_ids",
           "ownership_problem", "stage_directory", "swap_in"]

INDEX_FILE = "gcl_index.json"
DOCUMENTS_DIR = "documents"
FORMAT = "gcl-index"
_CACHE_FORMAT = "gcl-embedding-cache"
_OWN_ENTRY = re.compile(r"^(gcl_index\.json|meta\.json|documents|shard_\d+\.(npy|json)|\..+\.(tmp|old))$")
_CACHE_FILE = re.compile(r"^(meta\.json|shard_\d+\.(npy|json))$")

#: the fields of ``gcl_index.json``: name -> (accepted types, required)
FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "model_fingerprint": ((str,), True), "processor_fingerprint": ((str,), True), "num_rows": ((int,), True),
    "dim": ((int,), True), "model": ((str, type(None)), False), "revision": ((str, type(None)), False),
    "processor": ((str, type(None)), False), "processor_kwargs": ((dict,), False),
    "image_root": ((str, type(None)), False), "format": ((str,), True), "version": ((int,), True),
    "integrity": ((str, type(None)), False),
}


class IndexFormatError(ValueError):
    """A ``gcl_index.json`` that cannot be read, lacks a field, or does not match the files beside it."""


def check_fields(path: Path, data: Any) -> dict[str, Any]:
    """The fields of a parsed ``gcl_index.json``, each checked for presence and type (one line naming the field)."""
    if not isinstance(data, dict):
        raise IndexFormatError(f"{path}: expected a JSON object, got a {type(data).__name__}; rebuild the index")
    for name, (types, required) in FIELDS.items():
        if name not in data:
            if required:
                raise IndexFormatError(f"{path}: missing field {name!r}; rebuild the index (gcl-hf encode or "
                                       "GCLIndex.build(...).save(dir))")
            continue
        value = data[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise IndexFormatError(f"{path}: field {name!r} must be {names}, got {json.dumps(value)[:60]}")
    if data["num_rows"] < 1 or data["dim"] < 1:
        raise IndexFormatError(f"{path}: num_rows {data['num_rows']} and dim {data['dim']} must be >= 1")
    return {k: v for k, v in data.items() if k in FIELDS}


def normalised_ids(ids: list[Any]) -> list[Any]:
    """Ids as the JSON values shard sidecars hold (so a documents column and a sidecar compare equal)."""
    return json.loads(json.dumps(list(ids), default=str))


def integrity_digest(fields: dict[str, Any], ids: list[Any], shard_sha256s: list[str]) -> str:
    """Hash binding ``gcl_index.json``'s fields (less ``integrity``) to the ids and the shard files beside it."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps({k: v for k, v in fields.items() if k != "integrity"}, sort_keys=True).encode())
    h.update(b"\0")
    h.update(json.dumps(normalised_ids(ids)).encode())
    h.update(b"\0")
    h.update("|".join(shard_sha256s).encode())
    return h.hexdigest()


def _json_field(path: Path, key: str) -> Any:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get(key) if isinstance(data, dict) else None


def ownership_problem(directory: Path, embeddings_dir: Path | None = None) -> str | None:
    """Why ``directory`` is not gcl-hf's to overwrite with an index, or None when it is (absent, empty, an
    index, or the embedding cache the index's vectors live in)."""
    if not directory.exists():
        return None
    if not directory.is_dir():
        return f"{directory}: exists and is not a folder"
    entries = sorted(os.listdir(directory))
    if not entries:
        return None
    foreign = [e for e in entries if not _OWN_ENTRY.match(e)]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        return (f"{directory}: not empty and not a gcl-hf index (it holds {shown}); save into a new or empty "
                "folder (nothing was written)")
    if _json_field(directory / INDEX_FILE, "format") == FORMAT:
        return None
    if _json_field(directory / "meta.json", "format") == _CACHE_FORMAT or (
            embeddings_dir is not None and directory.resolve() == embeddings_dir.resolve()):
        return None
    return (f"{directory}: holds {', '.join(entries[:3])} but is not a gcl-hf index (no {INDEX_FILE} nor "
            "embedding-cache meta.json of gcl-hf's); save into a new or empty folder (nothing was written)")


def stage_directory(target: Path) -> Path:
    """A fresh hidden folder beside ``target`` to write a whole index into, then swap in with
    :func:`gcl_hf.atomic.atomic_replace_dir`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = temporary_name(target)
    stage.mkdir()
    return stage


def link_cache_files(source: Path, stage: Path) -> None:
    """Hard-link (else copy) the embedding-cache files of ``source`` into ``stage``: the vectors an index keeps
    when it is saved over the cache directory they live in (``gcl-hf encode``)."""
    for name in os.listdir(source):
        if _CACHE_FILE.match(name):
            try:
                os.link(source / name, stage / name)
            except OSError:
                shutil.copy2(source / name, stage / name)


#: the whole-folder swap, now :func:`gcl_hf.atomic.atomic_replace_dir` (this name kept for existing imports)
swap_in = atomic_replace_dir
