"""mteb (the real package) runs image, text and fused retrieval tasks with gcl-hf's encoders.

mteb ships mock any2any tasks for i2t and t2i only; the fused categories (it2t, t2it, it2it) are built here as
tiny in-memory tasks with mteb's own `AbsTaskRetrieval` / `TaskMetadata`, in the same way as its mocks.
"""

from __future__ import annotations

import mteb
import numpy as np
import pytest
import torch
from datasets import Dataset
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.mocks.mock_tasks import MockAny2AnyRetrievalI2TTask, MockAny2AnyRetrievalT2ITask, MockRetrievalTask
from PIL import Image

from gcl_hf import GCLModel
from gcl_hf.integrations.mteb import GCLEncoder, batch_items, gcl_model_meta
from gcl_hf.testing import tiny_clip, tiny_processor

WORDS = ["red", "blue", "green", "cat", "dog", "boat", "tree", "house", "snow", "sun", "car", "bird"]
N_QUERIES, N_DOCS = 6, 9


def _images(n: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]


def _texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=4)) for _ in range(n)]


def _rows(kind: str, n: int, seed: int) -> dict[str, list]:
    rows: dict[str, list] = {}
    if "i" in kind:
        rows["image"] = _images(n, seed)
    if "t" in kind:
        rows["text"] = _texts(n, seed + 100)
    return rows


def _items(rows: dict[str, list]) -> list:
    n = len(next(iter(rows.values())))
    return [{k: v[i] for k, v in rows.items()} for i in range(n)]


def _fused_task(category: str, model: GCLModel) -> AbsTaskRetrieval:
    """A tiny ``category`` task ("it2t", ...) whose relevant document is the query's nearest neighbour under
    ``model``'s own embeddings, so mteb gets nDCG@1 = 1 exactly when it feeds the rows as gcl-hf would."""
    query_kind, doc_kind = category.split("2")
    queries, corpus = _rows(query_kind, N_QUERIES, 1), _rows(doc_kind, N_DOCS, 2)
    q, d = model.encode(_items(queries)), model.encode(_items(corpus))
    best = (q @ d.T).argmax(axis=1)
    relevant = {f"q{i}": {f"d{j}": int(j == best[i]) for j in range(N_DOCS)} for i in range(N_QUERIES)}

    class FusedTask(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name=f"GCLTiny{category.upper()}Retrieval", description="A tiny fused retrieval task for gcl-hf tests.",
            reference="https://github.com/embeddings-benchmark/mteb", dataset={"path": "NA", "revision": "NA"},
            type="Any2AnyRetrieval", category=category, modalities=["image", "text"], eval_splits=["test"],
            eval_langs=["eng-Latn"], main_score="ndcg_at_10", date=("2025-01-01", "2025-01-01"),
            dialect=["Written"], domains=[], task_subtypes=[], license="cc-by-4.0", annotations_creators="derived",
            sample_creation="found", bibtex_citation="")

        def load_data(self, num_proc: int | None = None, **kwargs) -> None:
            split = RetrievalSplitData(
                queries=Dataset.from_dict({"id": [f"q{i}" for i in range(N_QUERIES)], **queries}),
                corpus=Dataset.from_dict({"id": [f"d{j}" for j in range(N_DOCS)], **corpus}),
                relevant_docs=relevant, top_ranked=None)
            self.dataset = {"default": {"test": split}}
            self.data_loaded = True

    return FusedTask()


@pytest.fixture(scope="module")
def model() -> GCLModel:
    model = GCLModel.from_backbone(tiny_clip(seed=3)).eval()
    model.processor = tiny_processor()
    return model


def _ndcg_at_1(result) -> float:
    return result.scores["test"][0]["ndcg_at_1"]


def test_fused_categories_run_with_gcl_embeddings(model):
    categories = ["it2t", "t2it", "it2it", "it2i"]
    tasks = [_fused_task(c, model) for c in categories]
    # the tasks can tell: reading the fused rows as images (or texts) only would rank differently
    q = model.encode(_items(_rows("it", N_QUERIES, 1)))
    d = model.encode(_items(_rows("t", N_DOCS, 2)))
    q_image_only = model.encode(_rows("it", N_QUERIES, 1)["image"])
    assert ((q @ d.T).argmax(1) != (q_image_only @ d.T).argmax(1)).any()

    results = mteb.evaluate(GCLEncoder(model, device="cpu"), tasks, cache=None, show_progress_bar=False,
                            encode_kwargs={"batch_size": 4, "show_progress_bar": False})
    assert not results.exceptions
    assert {r.task_name: _ndcg_at_1(r) for r in results.task_results} == {t.metadata.name: 1.0 for t in tasks}


def test_mteb_mock_image_and_text_tasks(model):
    tasks = [MockAny2AnyRetrievalI2TTask(), MockAny2AnyRetrievalT2ITask(), MockRetrievalTask()]
    results = mteb.evaluate(GCLEncoder(model, device="cpu"), tasks, cache=None, show_progress_bar=False,
                            encode_kwargs={"batch_size": 2, "show_progress_bar": False})
    assert not results.exceptions and len(results.task_results) == 3
    by_name = {r.task_name: r for r in results.task_results}
    for task in tasks[:2]:  # mteb's figure is the one gcl-hf's own embeddings give
        task = type(task)()  # mteb unloads the data after a run; a fresh mock draws the same images
        task.load_data()
        split = task.dataset["default"]["test"]
        queries, corpus = split["queries"], split["corpus"]
        q = model.encode([{c: row[c] for c in ("image", "text") if c in row} for row in queries])
        d = model.encode([{c: row[c] for c in ("image", "text") if c in row} for row in corpus])
        top = [corpus["id"][j] for j in (q @ d.T).argmax(1)]
        hits = [split["relevant_docs"][qid].get(doc, 0) > 0 for qid, doc in zip(queries["id"], top)]
        assert _ndcg_at_1(by_name[task.metadata.name]) == pytest.approx(np.mean(hits))


def test_model_meta_and_loading_from_a_directory(tmp_path, model):
    model.save_pretrained(tmp_path / "gcl")
    meta = gcl_model_meta(str(tmp_path / "gcl"))
    assert meta.modalities == ["image", "text"] and meta.embed_dim == model.embedding_dim
    assert meta.name == "gcl-hf/gcl" and meta.max_tokens == 32 and meta.use_instructions is False
    encoder = meta.loader(meta.name, revision=meta.revision, **meta.loader_kwargs)  # what meta.load_model() calls
    assert isinstance(encoder, GCLEncoder)
    with torch.no_grad():
        np.testing.assert_allclose(encoder.model.encode(["a dog"]), model.encode(["a dog"]), atol=1e-6, rtol=0)
    assert gcl_model_meta(model, name="me/gcl-tiny").name == "me/gcl-tiny"


def test_rows_become_items_and_empty_rows_are_named():
    image = _images(1, 0)[0]
    batch = {"id": ["a", "b", "c"], "image": [image, image, None], "text": ["x", "", "y"]}
    assert batch_items(batch) == [{"image": image, "text": "x"}, {"image": image}, {"text": "y"}]
    with pytest.raises(ValueError, match="WebQAT2ITRetrieval: row 12 has neither an image nor a text"):
        batch_items({"image": [None], "text": [" "]}, offset=12, task="WebQAT2ITRetrieval")


def test_rows_without_image_or_text_columns_are_an_error_not_zero_rows():
    """A batch holding neither an ``image`` nor a ``text`` column used to give 0 embeddings for its rows."""
    with pytest.raises(ValueError, match=r"Task: rows 4-6 have no 'image' or 'text' column \(columns \['caption', "
                                         r"'id'\]\)"):
        batch_items({"id": ["a", "b", "c"], "caption": ["x", "y", "z"]}, offset=4, task="Task")
    assert batch_items({}) == []
