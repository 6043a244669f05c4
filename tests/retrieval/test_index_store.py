"""A `GCLIndex` directory is gcl-hf's own, written atomically as a whole, and verified on load: a save never
deletes or overwrites a user's files, and a load never serves vectors that are not its documents'."""

import json
import shutil

import datasets
import numpy as np
import pytest
from PIL import Image

from gcl_hf import GCLModel
from gcl_hf.retrieval.index import GCLIndex, IndexFormatError, IndexMismatchError
from gcl_hf.testing import tiny_clip

TEXTS = ["a red boat", "two blue circles", "an old wooden door", "city lights at night", "a snowy hill"]


def _records():
    return [{"id": f"t{i}", "text": t} for i, t in enumerate(TEXTS)]


@pytest.fixture()
def saved(model, processor, tmp_path):
    GCLIndex.build(model, processor, _records(), show_progress=False).save(tmp_path / "idx")
    return tmp_path / "idx"


def test_saving_over_the_users_corpus_folder_is_refused(model, processor, tmp_path):
    """``build(..., "proj/documents").save("proj")`` used to delete the corpus folder."""
    docs = tmp_path / "proj" / "documents"
    docs.mkdir(parents=True)
    (docs / "a.txt").write_text("a red boat")
    Image.new("RGB", (8, 8), "red").save(docs / "a.png")
    index = GCLIndex.build(model, processor, docs, show_progress=False)
    with pytest.raises(FileExistsError, match=r"proj: holds documents but is not a gcl-hf index"):
        index.save(tmp_path / "proj")
    assert sorted(p.name for p in docs.iterdir()) == ["a.png", "a.txt"]
    assert sorted(p.name for p in (tmp_path / "proj").iterdir()) == ["documents"]


def test_a_folder_with_the_users_own_files_is_refused_untouched(model, processor, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "meta.json").write_text('{"author": "me"}')
    index = GCLIndex.build(model, processor, _records(), show_progress=False)
    with pytest.raises(FileExistsError, match=r"mine: holds meta\.json but is not a gcl-hf index"):
        index.save(folder)
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"mine: not empty and not a gcl-hf index \(it holds notes\.txt\)"):
        index.save(folder)
    assert (folder / "meta.json").read_text() == '{"author": "me"}' and sorted(p.name for p in folder.iterdir()) == \
        ["meta.json", "notes.txt"]
    assert not list(tmp_path.glob(".mine*"))  # no staging folder left behind


def test_resaving_replaces_the_whole_index_and_leaves_nothing_beside(model, processor, saved):
    other = GCLModel.from_backbone(tiny_clip(seed=1)).eval()
    GCLIndex.build(other, processor, _records()[:3], show_progress=False).save(saved)
    with pytest.raises(IndexMismatchError, match="another model"):
        GCLIndex.load(saved, model, processor)
    loaded = GCLIndex.load(saved, other, processor)
    assert loaded.ids == ["t0", "t1", "t2"] and loaded.search(text=TEXTS[1], k=1).ids == ["t1"]
    assert not list(saved.parent.glob(".idx*"))


def test_one_index_metadata_beside_another_index_embeddings_is_refused(model, processor, tmp_path, saved):
    """Two saves into one directory used to mix parts (one model's gcl_index.json, the other's shards) and pass."""
    other = GCLModel.from_backbone(tiny_clip(seed=1)).eval()
    GCLIndex.build(other, processor, _records(), show_progress=False).save(tmp_path / "b")
    shutil.copy(tmp_path / "b" / "gcl_index.json", saved / "gcl_index.json")
    with pytest.raises(IndexFormatError, match=r"gcl_index\.json: does not match the embeddings and documents"):
        GCLIndex.load(saved, other, processor)


def test_edited_ids_in_documents_are_refused(model, processor, saved):
    docs = datasets.load_from_disk(str(saved / "documents"))
    edited = docs.map(lambda r: {"id": "t1" if r["id"] == "t0" else ("t0" if r["id"] == "t1" else r["id"])})
    edited.save_to_disk(str(saved / "edited"))
    del docs
    shutil.rmtree(saved / "documents")
    (saved / "edited").rename(saved / "documents")
    with pytest.raises(IndexFormatError, match=r"row 0: documents/ has id 't1', the shards 't0'"):
        GCLIndex.load(saved, model, processor)


def test_hand_edited_processor_kwargs_are_refused(model, processor, saved):
    info = json.loads((saved / "gcl_index.json").read_text())
    info["processor_kwargs"] = {"max_length": 4}
    (saved / "gcl_index.json").write_text(json.dumps(info))
    with pytest.raises(IndexFormatError, match="a field was edited"):
        GCLIndex.load(saved, model, processor)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("dim"), r"missing field 'dim'"),
    (lambda d: d.update(num_rows=[5]), r"field 'num_rows' must be int, got \[5\]"),
    (lambda d: d.update(processor_kwargs="max_length=4"), r"field 'processor_kwargs' must be dict"),
])
def test_gcl_index_json_fields_are_checked(model, processor, saved, edit, message):
    info = json.loads((saved / "gcl_index.json").read_text())
    edit(info)
    (saved / "gcl_index.json").write_text(json.dumps(info))
    with pytest.raises(IndexFormatError, match=rf"idx/gcl_index\.json: {message}"):
        GCLIndex.load(saved, model, processor)


def test_a_list_or_corrupt_gcl_index_json_names_the_file(model, processor, saved):
    (saved / "gcl_index.json").write_text("[1, 2]")
    with pytest.raises(IndexFormatError, match=r"idx/gcl_index\.json: expected a JSON object, got a list"):
        GCLIndex.load(saved, model, processor)
    (saved / "gcl_index.json").write_text('{"format": "gcl-index", ')
    with pytest.raises(IndexFormatError, match=r"idx/gcl_index\.json: unreadable \(JSONDecodeError"):
        GCLIndex.load(saved, model, processor)


def test_a_missing_shard_says_why_and_what_to_do(model, processor, saved):
    (saved / "shard_00000.npy").unlink()
    with pytest.raises(IndexFormatError, match=r"0 of 5 embeddings present \(missing shards: shard_00000\.npy; "
                                               r"deleted or never written\); run the gcl-hf encode"):
        GCLIndex.load(saved, model, processor)


def test_an_empty_dataset_or_bad_ids_are_refused_before_encoding(model, processor):
    empty = datasets.Dataset.from_dict({"id": [], "text": []})
    with pytest.raises(ValueError, match="no documents to index"):
        GCLIndex.build(model, processor, empty, show_progress=False)
    dup = datasets.Dataset.from_dict({"id": ["a", "b", "a"], "text": ["x", "y", "z"]})
    with pytest.raises(ValueError, match="rows 0 and 2 have the same id 'a'"):
        GCLIndex.build(model, processor, dup, show_progress=False)
    with pytest.raises(ValueError, match=r"row 1 has no id \(None\)"):
        GCLIndex.build(model, processor, datasets.Dataset.from_dict({"id": ["a", None], "text": ["x", "y"]}),
                       show_progress=False)
    with pytest.raises(ValueError, match=r"record 1: no id \(None\)"):
        GCLIndex.build(model, processor, [{"id": "a", "text": "x"}, {"id": None, "text": "y"}], show_progress=False)


def test_a_nan_query_is_an_error_not_an_empty_result(model, processor):
    index = GCLIndex.build(model, processor, _records(), show_progress=False)
    query = np.full((1, index.info.dim), np.nan, dtype=np.float32)
    with pytest.raises(ValueError, match=r"query 0: the embedding is not finite"):
        index.search_embeddings(query, k=3)
