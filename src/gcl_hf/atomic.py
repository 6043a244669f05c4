"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one.

Every file gcl-hf rewrites in place — embedding-cache shards and their sidecars, ``gcl_index.json``, checkpoint
completion markers, the rankings manifest, a benchmark cache's meta — goes through :func:`atomic_write`: the bytes
go to a hidden temporary file in the same directory (so the rename never crosses a filesystem), are flushed and
fsync'ed, then ``os.replace`` puts them at the path; a failure anywhere leaves the old file as it was and removes
the temporary. A whole folder (a `GCLIndex`) is swapped in by :func:`atomic_replace_dir`.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_replace_dir", "atomic_write", "atomic_write_text", "fsync_path", "temporary_name"]


def temporary_name(path: str | os.PathLike, suffix: str = "tmp") -> Path:
    """A hidden name beside ``path``, unique to this process and call: ``.<name>.<pid>.<random>.<suffix>``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.{suffix}")


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file or folder to disk (best effort for folders, which some filesystems refuse to fsync)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        if not os.path.isdir(path):
            raise
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write ``path`` through ``write(binary file)``: to a temporary file beside it, fsync'ed, then ``os.replace``.

    If ``write`` (or the flush, or the rename) raises, the old ``path`` is untouched, the temporary is removed and
    the error propagates. Returns ``path``."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        with open(tmp, "xb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)  # the rename itself survives a power cut
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """:func:`atomic_write` of ``text`` (UTF-8 unless ``encoding`` says otherwise)."""
    data = text.encode(encoding)
    return atomic_write(path, lambda fh: fh.write(data))


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported or failed."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def atomic_replace_dir(stage: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the fully written folder ``stage`` at ``target`` in one step, then remove what was there.

    ``target`` absent or empty: one rename. Otherwise one ``renameat2(RENAME_EXCHANGE)`` where the kernel has it,
    else two renames (``target`` aside, ``stage`` in), with ``target`` put back if the second fails: a failed swap
    leaves the old folder at ``target`` and raises."""
    stage, target = Path(stage), Path(target)
    try:
        os.rename(stage, target)  # target absent (or an empty folder): atomic
        return
    except OSError:
        pass
    if _exchange(stage, target):
        shutil.rmtree(stage, ignore_errors=True)  # now holds the previous folder
        return
    old = temporary_name(target, "old")
    os.rename(target, old)
    try:
        os.rename(stage, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
