"""Atomic writes: the new bytes or the old file, never half of one and no temporary left behind; a folder swap
keeps the old folder when it fails."""

import os

import numpy as np
import pytest

from gcl_hf.atomic import atomic_replace_dir, atomic_write, atomic_write_text


class Interrupted(Exception):
    pass


def _entries(directory):
    return sorted(os.listdir(directory))


def test_the_happy_path_writes_and_replaces(tmp_path):
    path = tmp_path / "meta.json"
    assert atomic_write_text(path, '{"a": 1}') == path and path.read_text() == '{"a": 1}'
    atomic_write(path, lambda fh: np.save(fh, np.arange(3)))
    np.testing.assert_array_equal(np.load(path), np.arange(3))
    assert _entries(tmp_path) == ["meta.json"]


def test_a_failing_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "shard_00000.npy"
    path.write_bytes(b"old bytes")

    def half_then_fail(fh):
        fh.write(b"new, half writ")
        raise Interrupted("disk full")

    with pytest.raises(Interrupted, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old bytes" and _entries(tmp_path) == ["shard_00000.npy"]
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, "caf\u00e9", encoding="ascii")
    assert path.read_bytes() == b"old bytes" and _entries(tmp_path) == ["shard_00000.npy"]


def test_a_failing_rename_leaves_no_temporary(tmp_path):
    target = tmp_path / "a_folder"  # os.replace of a file onto a non-empty folder fails
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(OSError):
        atomic_write_text(target, "text")
    assert _entries(tmp_path) == ["a_folder"] and (target / "keep.txt").read_text() == "mine"


def _folder(path, **files):
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def test_a_folder_is_swapped_in_whole(tmp_path):
    target = _folder(tmp_path / "index", old="1")
    atomic_replace_dir(_folder(tmp_path / ".stage", new="2"), target)
    assert _entries(target) == ["new"] and _entries(tmp_path) == ["index"]
    atomic_replace_dir(_folder(tmp_path / ".stage2", newer="3"), tmp_path / "fresh")  # no target yet
    assert _entries(tmp_path / "fresh") == ["newer"]


def test_a_failed_folder_swap_keeps_the_old_folder(tmp_path):
    """The two-rename fallback used to move the old folder aside before the second rename failed: gone."""
    target = _folder(tmp_path / "index", old="1")
    with pytest.raises(FileNotFoundError):
        atomic_replace_dir(tmp_path / ".stage-that-was-never-written", target)
    assert _entries(tmp_path) == ["index"] and (target / "old").read_text() == "1"
