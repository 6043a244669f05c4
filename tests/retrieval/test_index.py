"""`GCLIndex`: build from a folder, records or a dataset, save/load, text / image / fused queries, exact vs
faiss, and refusing a model or processor other than the corpus was encoded with."""

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from gcl_hf import GCLModel
from gcl_hf.retrieval.encoding import encode_dataset
from gcl_hf.retrieval.index import (GCLIndex, IndexMismatchError, documents_from_folder, model_fingerprint,
                                    processor_fingerprint)
from gcl_hf.testing import tiny_clip, tiny_processor

CAPTIONS = ["a red square on grass", "two blue circles", "a green digit seven", "a yellow triangle at dusk",
            "purple dots in a row", "an old wooden boat", "city lights at night", "a snowy hill"]


def write_documents(folder, n=len(CAPTIONS)):
    """``n`` image+text documents (random 24 px images, same-name captions), one image-only and one text-only."""
    rng = np.random.default_rng(0)
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        where = folder / "sub" if i % 3 == 0 else folder
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(where / f"doc{i}.png")
        (where / f"doc{i}.txt").write_text(CAPTIONS[i] + "\n")
    Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(folder / "photo.jpg")
    (folder / "note.txt").write_text("a note with words only")
    (folder / "README.md").write_text("ignored")
    return folder


def _doc_path(folder, i):
    return folder / ("sub" if i % 3 == 0 else "") / f"doc{i}.png"



@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_documents(tmp_path_factory.mktemp("docs"))


@pytest.fixture(scope="module")
def index(model, processor, folder):
    return GCLIndex.build(model, processor, folder, show_progress=False)


def test_documents_from_folder(folder):
    docs = documents_from_folder(folder)
    rows = {r["id"]: r for r in docs}
    assert set(rows) == {f"sub/doc{i}" if i % 3 == 0 else f"doc{i}" for i in range(8)} | {"photo", "note"}
    assert rows["doc1"] == {"id": "doc1", "text": CAPTIONS[1], "image": "doc1.png", "modality": "image,text"}
    assert rows["sub/doc0"]["image"] == "sub/doc0.png"
    assert rows["photo"]["modality"] == "image" and rows["note"]["modality"] == "text"


def test_folder_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="document folder not found"):
        documents_from_folder(tmp_path / "nope")
    (tmp_path / "a.txt").write_text("  ")
    with pytest.raises(ValueError, match=r"a\.txt: empty text file"):
        documents_from_folder(tmp_path)
    (tmp_path / "a.txt").write_text("words")
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "a.jpg")
    with pytest.raises(ValueError, match="two images for document 'a'"):
        documents_from_folder(tmp_path)


def test_each_document_finds_itself_first(index, folder):
    """Query = the document itself (fused, image-only, text-only): it ranks first with cosine 1."""
    for i in range(len(CAPTIONS)):
        doc_id = f"sub/doc{i}" if i % 3 == 0 else f"doc{i}"
        hits = index.search(text=CAPTIONS[i], image=_doc_path(folder, i), k=3)
        assert hits.ids[0] == doc_id and hits.scores[0] == pytest.approx(1.0, abs=1e-5)
        assert len(hits) == 3 and hits.scores == sorted(hits.scores, reverse=True)
    assert index.search(image=folder / "photo.jpg", k=1).ids == ["photo"]
    assert index.search(text="a note with words only", k=1).ids == ["note"]


def test_query_numbers_equal_the_corpus_numbers(index, model, processor, folder):
    docs = documents_from_folder(folder)
    corpus = encode_dataset(model, processor, docs, image_root=str(folder), show_progress=False)
    row = docs["id"].index("doc4")
    query = index.encode_query(text=CAPTIONS[4], image=folder / "doc4.png")
    torch.testing.assert_close(query[0], corpus[row], atol=1e-6, rtol=0)
    hits = index.search(text="two blue", k=len(index))
    text_query = index.encode_query(text="two blue")[0]
    expected = torch.sort(corpus @ text_query, descending=True, stable=True)
    assert hits.ids == [docs["id"][j] for j in expected.indices.tolist()]
    np.testing.assert_allclose(hits.scores, expected.values.numpy(), atol=1e-6)


def test_fused_differs_from_its_parts(index, folder):
    fused = index.encode_query(text=CAPTIONS[2], image=folder / "doc2.png")
    image = index.encode_query(image=folder / "doc2.png")
    text = index.encode_query(text=CAPTIONS[2])
    assert not torch.allclose(fused, image, atol=1e-3) and not torch.allclose(fused, text, atol=1e-3)


def test_save_load_round_trip(index, model, processor, folder, tmp_path):
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    built = GCLIndex.build(model, processor, folder, model_ref=str(model_dir), show_progress=False)
    built.save(tmp_path / "index")
    assert {p.name for p in (tmp_path / "index").iterdir()} >= {"gcl_index.json", "meta.json", "shard_00000.npy",
                                                                "documents"}
    loaded = GCLIndex.load(tmp_path / "index")  # the model and processor come from the recorded reference
    assert loaded.ids == index.ids and loaded.info.model == str(model_dir)
    a = built.search(text=CAPTIONS[5], image=folder / "doc5.png", k=5)
    b = loaded.search(text=CAPTIONS[5], image=folder / "doc5.png", k=5)
    assert a.ids == b.ids and b.ids[0] == "doc5"
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
    assert loaded.document(b.rows[0])["text"] == CAPTIONS[5]


def test_faiss_backend_agrees_with_exact(index, model, processor, tmp_path, folder):
    index.save(tmp_path / "idx")
    exact = GCLIndex.load(tmp_path / "idx", model, processor)
    flat = GCLIndex.load(tmp_path / "idx", model, processor, backend="faiss")
    for text, image in ((CAPTIONS[0], _doc_path(folder, 0)), ("boat", None), (None, folder / "doc7.png")):
        a, b = exact.search(text=text, image=image, k=6), flat.search(text=text, image=image, k=6)
        assert a.ids == b.ids
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_mismatched_model_or_processor_is_refused(index, tmp_path):
    index.save(tmp_path / "idx")
    with pytest.raises(IndexMismatchError, match="encoded with another model"):
        GCLIndex.load(tmp_path / "idx", GCLModel.from_backbone(tiny_clip(seed=1)), tiny_processor())
    with pytest.raises(IndexMismatchError, match="encoded with another model"):
        GCLIndex.load(tmp_path / "idx", GCLModel.from_backbone(tiny_clip(seed=0), fusion="mlp"), tiny_processor())
    with pytest.raises(IndexMismatchError, match="another processor"):
        GCLIndex.load(tmp_path / "idx", GCLModel.from_backbone(tiny_clip(seed=0)), tiny_processor(max_length=16))
    with pytest.raises(ValueError, match="records no model reference"):  # built from an unnamed in-memory model
        GCLIndex.load(tmp_path / "idx")


def test_fingerprints_survive_save_load_and_use(model, processor, tmp_path):
    from transformers import AutoProcessor

    from gcl_hf import hub

    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    assert model_fingerprint(hub.load(tmp_path / "m")) == model_fingerprint(model)
    fresh = processor_fingerprint(tiny_processor())
    processor(text=["pad me", "and truncate me " * 20], padding=True, truncation=True)  # changes tokenizer state
    assert processor_fingerprint(processor) == fresh
    assert processor_fingerprint(AutoProcessor.from_pretrained(tmp_path / "m")) == fresh


def test_records_and_datasets(model, processor, folder):
    records = [{"id": "r0", "text": "a red square on grass"},
               {"id": "r1", "image": Image.open(folder / "doc1.png")},
               {"id": "r2", "text": CAPTIONS[2], "image": str(folder / "doc2.png")}]
    index = GCLIndex.build(model, processor, records, show_progress=False)
    assert index.search(text=CAPTIONS[2], image=folder / "doc2.png", k=1).ids == ["r2"]
    assert index.search(image=folder / "doc1.png", k=1).ids == ["r1"]
    ds = datasets.Dataset.from_list([{"id": "d0", "text": "alpha"}, {"id": "d1", "text": "beta gamma"}])
    assert GCLIndex.build(model, processor, ds, show_progress=False).search(text="beta gamma", k=1).ids == ["d1"]
    with pytest.raises(ValueError, match=r"record 1 \(id 'x'\): neither a text nor an image"):
        GCLIndex.build(model, processor, [{"text": "ok"}, {"id": "x", "text": ""}], show_progress=False)


def test_build_through_the_cache_and_bad_queries(model, processor, folder, tmp_path):
    cached = GCLIndex.build(model, processor, folder, cache_dir=tmp_path / "cache", shard_size=4, show_progress=False)
    assert len(list((tmp_path / "cache").glob("*/shard_*.npy"))) == 3  # 10 documents in shards of 4
    cached.save(tmp_path / "idx")
    loaded = GCLIndex.load(tmp_path / "idx", model, processor)
    assert loaded.search(text=CAPTIONS[1], image=folder / "doc1.png", k=1).ids == ["doc1"]
    with pytest.raises(ValueError, match="text=..., image=... or both"):
        loaded.search(k=3)
    with pytest.raises(ValueError, match="non-empty string"):
        loaded.search(text="   ")


def test_load_finds_the_recorded_processor_else_the_models_and_names_what_it_tried(model, processor, folder,
                                                                                     tmp_path):
    """`GCLIndex.load` asks `find_processor` (the one owner): the recorded processor only when one is recorded,
    the model's own when the index records neither; a failure is a `ProcessorNotFoundError` naming the index."""
    import shutil

    from gcl_hf.modeling.loading import ProcessorNotFoundError

    model_dir, proc_dir = tmp_path / "model", tmp_path / "proc"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    processor.save_pretrained(proc_dir)
    GCLIndex.build(model, processor, folder, model_ref=str(model_dir), processor_ref=str(proc_dir),
                   show_progress=False).save(tmp_path / "idx")
    assert processor_fingerprint(GCLIndex.load(tmp_path / "idx").processor) == processor_fingerprint(processor)
    shutil.rmtree(proc_dir)  # the model's directory still has one, but the index recorded this one
    with pytest.raises(ProcessorNotFoundError) as err:
        GCLIndex.load(tmp_path / "idx")
    assert [t.split(": ")[0] for t in err.value.tried] == [str(proc_dir)]
    assert str(err.value).startswith(f"{tmp_path / 'idx'}: cannot load the processor the corpus was encoded with")
    assert "\n" not in str(err.value)

    GCLIndex.build(model, processor, folder, show_progress=False).save(tmp_path / "unnamed")  # records neither
    own = GCLModel.from_backbone(tiny_clip(seed=0)).eval()
    own.processor = tiny_processor()
    assert GCLIndex.load(tmp_path / "unnamed", own).processor is own.processor
    with pytest.raises(ProcessorNotFoundError, match="tried nothing: neither the index nor the model names one"):
        GCLIndex.load(tmp_path / "unnamed", GCLModel.from_backbone(tiny_clip(seed=0)).eval())
