"""A folder corpus holds exactly the user's visible documents inside it: symlinks leaving it, symlinked and
hidden folders, case and Unicode-form twins, BOMs and bytes that are not UTF-8 are each handled by name."""

import logging
import os
import unicodedata

import pytest
from PIL import Image

from gcl_hf.errors import RecordError
from gcl_hf.retrieval.documents import documents_from_folder


def _ids(folder):
    return sorted(documents_from_folder(folder)["id"])


def test_a_symlink_to_a_file_outside_is_skipped_and_counted(tmp_path, caplog):
    (tmp_path / "secret.txt").write_text("password=hunter2")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("a red boat")
    (docs / "leak.txt").symlink_to(tmp_path / "secret.txt")
    (docs / "alias.txt").symlink_to(docs / "a.txt")  # inside: followed
    with caplog.at_level(logging.WARNING, logger="gcl_hf.retrieval.documents"):
        rows = documents_from_folder(docs)
    assert sorted(rows["id"]) == ["a", "alias"] and "hunter2" not in " ".join(rows["text"])
    assert "skipped 1 entry: 1 symlink to a file outside the folder (leak.txt)" in caplog.text


def test_a_symlinked_folder_is_reported_not_silently_dropped(tmp_path, caplog):
    docs = tmp_path / "docs"
    (docs / "real").mkdir(parents=True)
    (docs / "real" / "a.txt").write_text("a red boat")
    (docs / "linked").symlink_to(docs / "real", target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="gcl_hf.retrieval.documents"):
        assert _ids(docs) == ["real/a"]
    assert "1 symlinked folder (not followed) (linked)" in caplog.text


def test_files_inside_hidden_folders_are_skipped(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "description.txt").write_text("Unnamed repository")
    (tmp_path / "a.txt").write_text("a red boat")
    assert _ids(tmp_path) == ["a"]


def test_case_twins_are_an_error(tmp_path):
    (tmp_path / "a.txt").write_text("a red boat")
    (tmp_path / "a.TXT").write_text("a blue boat")
    with pytest.raises(ValueError, match=r"two texts for document 'a'"):
        documents_from_folder(tmp_path)


def test_ids_differing_in_case_only_are_an_error(tmp_path):
    (tmp_path / "Boat.txt").write_text("a red boat")
    (tmp_path / "boat.txt").write_text("a blue boat")
    with pytest.raises(ValueError, match=r"documents 'Boat' and 'boat' differ only in case or Unicode form"):
        documents_from_folder(tmp_path)


def test_unicode_form_twins_are_an_error(tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    (tmp_path / f"{nfc}.txt").write_text("one")
    (tmp_path / f"{nfd}.txt").write_text("two")
    if len(os.listdir(tmp_path)) < 2:  # a normalising file system holds one file: nothing to detect
        pytest.fail("this file system merges NFC/NFD names")
    with pytest.raises(ValueError, match="differ only in case or Unicode form"):
        documents_from_folder(tmp_path)


def test_a_utf8_bom_is_dropped(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbfa red boat")
    assert documents_from_folder(tmp_path)["text"] == ["a red boat"]


def test_a_text_that_is_not_utf8_names_the_file_and_offset(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"caf\xe9 au lait")
    with pytest.raises(RecordError, match=r"a\.txt: not valid UTF-8: byte 0xe9 at byte offset 3"):
        documents_from_folder(tmp_path)


def test_a_file_name_that_is_not_utf8_is_named(tmp_path):
    (tmp_path / "ok.txt").write_text("fine")
    with open(os.fsencode(tmp_path) + b"/caf\xe9.png", "wb") as fh:
        Image.new("RGB", (4, 4)).save(fh, format="PNG")
    with pytest.raises(RecordError, match=r"caf\\xe9\.png: the file name is not valid UTF-8"):
        documents_from_folder(tmp_path)
