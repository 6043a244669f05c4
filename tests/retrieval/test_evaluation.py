"""`evaluate_retrieval`, `encode_dataset` and the embedding cache on a small hand-made task."""

import os

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from gcl_hf import GCLModel
from gcl_hf.benchmarks.task import RetrievalTask
from gcl_hf.retrieval.embedding_cache import cache_key, dataset_fingerprint, encode_corpus
from gcl_hf.retrieval.encoding import EncodingError, encode_dataset
from gcl_hf.retrieval.evaluation import evaluate_retrieval, rank_corpus
from gcl_hf.testing import tiny_clip, tiny_processor

TEXTS = ["a red dog", "blue sky at noon", "green tree", "two cats", "an old car", "small boat", "city lights",
         "snowy hill", "yellow flower", "dark forest", "a long road", "white house"]


def _item(i, modality):  # every corpus item distinct (no exact score ties)
    return {
        "id": f"c{i}",
        "text": f"{TEXTS[i % len(TEXTS)]} {i}" if "text" in modality else None,
        "image": f"img/{i}.png" if "image" in modality else None,
        "modality": modality,
    }


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    (root / "img").mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        size = (16 + i % 5, 20 + i % 7)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / "img" / f"{i}.png")
    return str(root)



def _task(image_root, **kw):
    modalities = ["image", "text", "image,text"]
    corpus = [_item(i, modalities[i % 3]) for i in range(24)]
    queries = [
        {"id": "q0", "text": "dog", "image": None, "modality": "text"},
        {"id": "q1", "text": None, "image": "img/1.png", "modality": "image"},
        {"id": "q2", "text": "sky", "image": "img/2.png", "modality": "image,text"},
        {"id": "q3", "text": "cats and cars", "image": None, "modality": "text"},
        {"id": "q4", "text": "tree", "image": "img/5.png", "modality": "image,text"},
        {"id": "q5", "text": None, "image": "img/6.png", "modality": "image"},
    ]
    qrels = {"q0": {"c0", "c13"}, "q1": {"c1"}, "q2": {"c2", "c5"}, "q3": {"c9"}, "q4": {"c20"}, "q5": {"c6", "c7"}}
    as_ds = lambda rows: datasets.Dataset.from_list(rows)  # noqa: E731
    return RetrievalTask("toy", as_ds(queries), as_ds(corpus), qrels, image_root=image_root, **kw)


@torch.inference_mode()
def _one_by_one(model, processor, dataset, image_root):
    """Reference embeddings: every row encoded alone, no batching, no padding."""
    out = []
    for row in dataset:
        m = row["modality"]
        image = Image.open(os.path.join(image_root, row["image"])).convert("RGB") if "image" in m else None
        if m == "image":
            emb = model.encode_image(processor(images=[image], return_tensors="pt")["pixel_values"])
        elif m == "text":
            t = processor(text=[row["text"]], return_tensors="pt")
            emb = model.encode_text(t["input_ids"], t["attention_mask"])
        else:
            t = processor(images=[image], text=[row["text"]], return_tensors="pt")
            emb = model.encode_fused(t["pixel_values"], t["input_ids"], t["attention_mask"])
        out.append(emb[0])
    return torch.stack(out)


def _hand_recall(task, scores, ks, exclude=None):
    ids = task.corpus["id"]
    hits = {k: 0 for k in ks}
    for n, qid in enumerate(task.queries["id"]):
        s = scores[n].clone()
        for j, cid in enumerate(ids):
            if exclude and cid in exclude.get(qid, ()):
                s[j] = -torch.inf
        order = torch.sort(s, descending=True, stable=True).indices.tolist()
        ranked = [ids[j] for j in order if torch.isfinite(s[j])]
        for k in ks:
            hits[k] += any(c in task.qrels[qid] for c in ranked[:k])
    return {f"recall@{k}": hits[k] / len(task.queries) for k in ks}


def test_encode_dataset_keeps_order_and_matches_unbatched(model, processor, image_root):
    task = _task(image_root)
    got = encode_dataset(model, processor, task.corpus, image_root=image_root, batch_size=5, show_progress=False)
    ref = _one_by_one(model, processor, task.corpus, image_root)
    assert got.shape == (24, model.embedding_dim) and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.norm(dim=1), torch.ones(24))
    # DataLoader workers decoding images give the same rows in the same order.
    par = encode_dataset(model, processor, task.corpus, image_root=image_root, batch_size=4, num_workers=2,
                         show_progress=False)
    torch.testing.assert_close(par, got, rtol=1e-4, atol=1e-5)


def test_frames_are_pooled_with_their_weights(model, processor, image_root):
    """CoVR's target="scores" corpus: an image row with frames is the weighted, re-normalised sum."""
    rows = [
        {"id": "v0", "text": None, "image": "img/0.png", "modality": "image", "frames": ["img/1.png", "img/2.png"],
         "frame_weights": [0.25, 0.75]},
        {"id": "v1", "text": None, "image": "img/3.png", "modality": "image", "frames": [], "frame_weights": []},
        {"id": "v2", "text": "two cats", "image": "img/4.png", "modality": "image,text", "frames": [],
         "frame_weights": []},
    ]
    ds = datasets.Dataset.from_list(rows)
    got = encode_dataset(model, processor, ds, image_root=image_root, batch_size=2, show_progress=False)
    frames = _one_by_one(model, processor, datasets.Dataset.from_list(
        [{"id": f"f{i}", "text": None, "image": f"img/{i}.png", "modality": "image"} for i in (1, 2, 3)]), image_root)
    expected0 = torch.nn.functional.normalize(0.25 * frames[0] + 0.75 * frames[1], dim=0)
    torch.testing.assert_close(got[0], expected0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[1], frames[2], rtol=1e-4, atol=1e-5)  # no frames: its image
    fused = _one_by_one(model, processor, ds.select([2]).remove_columns(["frames", "frame_weights"]), image_root)
    torch.testing.assert_close(got[2], fused[0], rtol=1e-4, atol=1e-5)


def test_evaluate_retrieval_equals_brute_force(model, processor, image_root):
    task = _task(image_root)
    q = _one_by_one(model, processor, task.queries, image_root)
    c = _one_by_one(model, processor, task.corpus, image_root)
    expected = _hand_recall(task, q @ c.T, (1, 3, 5, 10))
    got = evaluate_retrieval(model, processor, task, k=(1, 3, 5, 10), batch_size=4, chunk_size=7, show_progress=False)
    assert got.pop("num_queries") == 6
    assert got == pytest.approx(expected)
    assert 0 < got["recall@10"] and got["recall@1"] < 1  # the toy task is neither trivial nor hopeless
    faiss = evaluate_retrieval(model, processor, task, k=(1, 3, 5, 10), index="faiss", show_progress=False)
    assert faiss == pytest.approx({**expected, "num_queries": 6})


def test_faiss_rankings_equal_exact(model, processor, image_root):
    task = _task(image_root)
    q = encode_dataset(model, processor, task.queries, image_root=image_root, show_progress=False)
    c = encode_dataset(model, processor, task.corpus, image_root=image_root, show_progress=False)
    exact = rank_corpus(task, q, c, 10, chunk_size=5)
    assert rank_corpus(task, q, c, 10, index="faiss") == exact
    full = torch.sort(q @ c.T, dim=1, descending=True, stable=True).indices[:, :10]
    assert exact == [[f"c{j}" for j in row] for row in full.tolist()]


def test_candidates_mmeb_style(model, processor, image_root):
    cands = {"q0": ["c0", "c3", "c4"], "q1": ["c1", "c2"], "q2": ["c2", "c8", "c11", "c14"], "q3": ["c9", "c10"],
             "q4": ["c20", "c21", "c0"], "q5": ["c6", "c1", "c2", "c3"]}
    task = _task(image_root, metric="precision_at_1", candidates=cands)
    task.qrels = {q: {c[0]} for q, c in cands.items()}  # MMEB: the positive is the list's first entry
    q = _one_by_one(model, processor, task.queries, image_root)
    c = _one_by_one(model, processor, task.corpus, image_root)
    index = {cid: i for i, cid in enumerate(task.corpus["id"])}
    hits = 0
    for n, qid in enumerate(task.queries["id"]):
        scores = torch.stack([q[n] @ c[index[x]] for x in cands[qid]])
        hits += int(torch.argmax(scores)) == 0
    got = evaluate_retrieval(model, processor, task, show_progress=False)
    assert got == pytest.approx({"precision@1": hits / 6, "num_queries": 6})
    # Rankings only ever hold the query's own candidates.
    qe = encode_dataset(model, processor, task.queries, image_root=image_root, show_progress=False)
    ce = encode_dataset(model, processor, task.corpus, image_root=image_root, show_progress=False)
    for qid, ranked in zip(task.queries["id"], rank_corpus(task, qe, ce, 10)):
        assert sorted(ranked) == sorted(cands[qid])


def test_candidates_ties_keep_list_order(processor, image_root):
    class Constant(torch.nn.Module):  # every item gets the same embedding: all scores tie
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1, 4) / 2)

        def embed(self, inputs, modality, normalize=True):  # the per-batch step encoding paths call
            key = "pixel_values" if modality == "image" else "input_ids"
            return self.w.expand(len(inputs[key]), 4)

    cands = {q: ["c5", "c1", "c3"] for q in ("q0", "q1", "q2", "q3", "q4", "q5")}
    task = _task(image_root, metric="precision_at_1", candidates=cands)
    task.qrels = {q: {"c5"} for q in cands}
    assert evaluate_retrieval(Constant(), processor, task, show_progress=False)["precision@1"] == 1.0


def test_exclude_covr_style(model, processor, image_root):
    base = _task(image_root)
    q = _one_by_one(model, processor, base.queries, image_root)
    c = _one_by_one(model, processor, base.corpus, image_root)
    best = torch.argmax(q @ c.T, dim=1).tolist()
    exclude = {qid: {f"c{best[n]}"} for n, qid in enumerate(base.queries["id"])}
    exclude["q0"] |= {"c13", "c-not-in-corpus"}
    task = _task(image_root, exclude=exclude)
    expected = _hand_recall(task, q @ c.T, (1, 5, 10), exclude=exclude)
    got = evaluate_retrieval(model, processor, task, k=(1, 5, 10), chunk_size=5, show_progress=False)
    assert got == pytest.approx({**expected, "num_queries": 6})
    qe = encode_dataset(model, processor, task.queries, image_root=image_root, show_progress=False)
    ce = encode_dataset(model, processor, task.corpus, image_root=image_root, show_progress=False)
    for qid, ranked in zip(task.queries["id"], rank_corpus(task, qe, ce, 24)):
        assert not set(ranked) & exclude[qid]
        assert len(ranked) == 24 - len(exclude[qid] & set(task.corpus["id"]))
    assert rank_corpus(task, qe, ce, 24, index="faiss") == rank_corpus(task, qe, ce, 24)


def test_cache_reuse_and_resume(model, processor, image_root, tmp_path):
    task = _task(image_root)
    kw = dict(cache_dir=tmp_path, image_root=image_root, batch_size=4, shard_size=10, show_progress=False)
    first = encode_corpus(model, processor, task.corpus, **kw)
    assert first.encoded_rows == 24 and first.complete and len(first.shards) == 3
    files = sorted(first.directory.glob("shard_*.npy"))
    assert [f.name for f in files] == ["shard_00000.npy", "shard_00001.npy", "shard_00002.npy"]
    mtimes = [f.stat().st_mtime_ns for f in files]
    reference = encode_dataset(model, processor, task.corpus, image_root=image_root, show_progress=False)
    np.testing.assert_allclose(first.to_numpy(), reference.numpy(), rtol=1e-5, atol=1e-6)

    second = encode_corpus(model, processor, task.corpus, **kw)
    assert second.encoded_rows == 0 and second.directory == first.directory
    assert [f.stat().st_mtime_ns for f in files] == mtimes  # nothing rewritten
    np.testing.assert_array_equal(second.to_numpy(), first.to_numpy())

    # A crash mid-run: shard 1 never written, shard 2 truncated, a temp file left behind.
    files[1].unlink()
    files[2].write_bytes(files[2].read_bytes()[:50])
    (first.directory / ".shard_00001.npy.123.tmp").write_bytes(b"partial")
    resumed = encode_corpus(model, processor, task.corpus, **kw)
    assert resumed.encoded_rows == 10 + 4  # only the two missing/broken shards
    assert files[0].stat().st_mtime_ns == mtimes[0]
    np.testing.assert_allclose(resumed.to_numpy(), reference.numpy(), rtol=1e-5, atol=1e-6)


def test_cache_shards_split_across_processes(model, processor, image_root, tmp_path):
    task = _task(image_root)
    kw = dict(cache_dir=tmp_path, image_root=image_root, shard_size=10, num_processes=2, show_progress=False)
    p0 = encode_corpus(model, processor, task.corpus, process_index=0, **kw)
    assert p0.encoded_rows == 10 + 4 and not p0.complete  # shards 0 and 2
    p1 = encode_corpus(model, processor, task.corpus, process_index=1, **kw)
    assert p1.encoded_rows == 10 and p1.complete
    final = encode_corpus(model, processor, task.corpus, cache_dir=tmp_path, image_root=image_root, shard_size=10,
                          show_progress=False)
    assert final.encoded_rows == 0 and final.complete and len(final) == 24
    reference = encode_dataset(model, processor, task.corpus, image_root=image_root, show_progress=False)
    np.testing.assert_allclose(final.to_numpy(), reference.numpy(), rtol=1e-5, atol=1e-6)


def test_relevant_ids_missing_from_corpus_warn_and_count_as_misses(model, processor, image_root, caplog):
    task = _task(image_root)
    task.qrels["q1"] = {"not-in-corpus"}
    with caplog.at_level("WARNING", logger="gcl_hf.retrieval.evaluation"):
        got = evaluate_retrieval(model, processor, task, k=(24,), show_progress=False)
    assert "1 of 6 queries have no relevant id in the corpus (e.g. 'q1')" in caplog.text
    assert got["recall@24"] == pytest.approx(5 / 6)


def test_cache_key_tracks_weights_processor_and_data(model, processor, image_root, tmp_path):
    task = _task(image_root)
    key = cache_key(model, processor, task.corpus)
    assert cache_key(model, processor, task.corpus) == key
    assert cache_key(GCLModel.from_backbone(tiny_clip(seed=1)), processor, task.corpus) != key
    assert cache_key(model, tiny_processor(max_length=16), task.corpus) != key
    edited = task.corpus.map(lambda r, i: {"text": r["text"] + "!" if i == 4 else r["text"]}, with_indices=True)
    assert dataset_fingerprint(edited) != dataset_fingerprint(task.corpus)
    rebuilt = datasets.Dataset.from_list(list(task.corpus))
    assert dataset_fingerprint(rebuilt) == dataset_fingerprint(task.corpus)


def test_evaluate_with_cache_dir_reuses_embeddings(model, processor, image_root, tmp_path):
    task = _task(image_root)
    plain = evaluate_retrieval(model, processor, task, show_progress=False)
    cached = evaluate_retrieval(model, processor, task, cache_dir=tmp_path, show_progress=False)
    assert cached == pytest.approx(plain)
    shards = sorted(tmp_path.glob("*/shard_*.npy"))
    assert len(shards) == 2  # one for the corpus, one for the queries
    mtimes = [p.stat().st_mtime_ns for p in shards]
    assert evaluate_retrieval(model, processor, task, cache_dir=tmp_path, show_progress=False) == pytest.approx(plain)
    assert [p.stat().st_mtime_ns for p in shards] == mtimes


def test_errors_name_row_and_field(model, processor, image_root):
    task = _task(image_root)
    bad = task.corpus.map(lambda r, i: {"image": "img/missing.png" if i == 3 else r["image"]}, with_indices=True)
    with pytest.raises(EncodingError, match=r"row 3 \(id 'c3'\), field 'image', path '.*missing.png': file not found"):
        encode_dataset(model, processor, bad, image_root=image_root, show_progress=False)
    bad = task.corpus.map(lambda r, i: {"modality": "video" if i == 2 else r["modality"]}, with_indices=True)
    with pytest.raises(EncodingError, match=r"row 2 \(id 'c2'\), field 'modality': unknown modality 'video'"):
        encode_dataset(model, processor, bad, image_root=image_root, show_progress=False)
    bad = task.corpus.map(lambda r, i: {"text": None if i == 5 else r["text"]}, with_indices=True)
    with pytest.raises(EncodingError, match=r"row 5 \(id 'c5'\), field 'text'"):
        encode_dataset(model, processor, bad, image_root=image_root, show_progress=False)
    no_qrels = _task(image_root)
    del no_qrels.qrels["q3"]
    with pytest.raises(ValueError, match="query 'q3' has no relevant corpus id"):
        evaluate_retrieval(model, processor, no_qrels, show_progress=False)
    with pytest.raises(ValueError, match="search backend 'hnsw': expected one of exact, faiss"):
        evaluate_retrieval(model, processor, task, index="hnsw", show_progress=False)


def test_errors_name_the_original_row_when_encoding_a_selection(model, processor, image_root):
    """Shards encode ``rows=`` selections: messages must name the row of the whole dataset."""
    task = _task(image_root)
    bad = task.corpus.map(lambda r, i: {"image": "img/missing.png" if i == 3 else r["image"]}, with_indices=True)
    with pytest.raises(EncodingError, match=r"row 3 \(id 'c3'\), field 'image'"):
        encode_dataset(model, processor, bad, image_root=image_root, rows=[2, 3], show_progress=False)
    bad = task.corpus.map(lambda r, i: {"modality": "video" if i == 2 else r["modality"]}, with_indices=True)
    with pytest.raises(EncodingError, match=r"row 2 \(id 'c2'\), field 'modality'"):
        encode_dataset(model, processor, bad, image_root=image_root, rows=[1, 2], show_progress=False)
    bad = task.corpus.map(lambda r, i: {"text": None if i == 5 else r["text"]}, with_indices=True)
    with pytest.raises(EncodingError, match=r"row 5 \(id 'c5'\), field 'text'"):
        encode_dataset(model, processor, bad, image_root=image_root, rows=[4, 5], show_progress=False)


def test_score_rankings_plain_functions_agree_with_the_evaluate_modules():
    """score_rankings calls the metrics' plain functions; the `evaluate` modules (the public API) give the same."""
    from gcl_hf import metrics
    from gcl_hf.retrieval.evaluation import metric_function, score_rankings

    rng = np.random.default_rng(0)
    ids = [f"c{i}" for i in range(30)]
    predictions = [list(rng.permutation(ids)[:12]) for _ in range(40)]
    references = [list(rng.choice(ids, size=int(rng.integers(1, 4)), replace=False)) for _ in range(40)]
    plain = metric_function("recall_at_k")(predictions, references, [1, 3, 5, 10])
    module = metrics.load("recall_at_k", keep_in_memory=True).compute(
        predictions=predictions, references=references, k=[1, 3, 5, 10])
    assert plain == module and 0 < plain["recall@1"] < plain["recall@10"] < 1
    plain = metric_function("precision_at_1")(predictions, references)
    module = metrics.load("precision_at_1", keep_in_memory=True).compute(predictions=predictions,
                                                                          references=references)
    assert plain == module

    class Task:  # the shape score_rankings reads
        name, metric = "t", "recall"
        queries = {"id": [f"q{i}" for i in range(40)]}
        qrels = {f"q{i}": set(r) for i, r in enumerate(references)}

    expected = metrics.load("recall_at_k", keep_in_memory=True).compute(
        predictions=predictions, references=[sorted(r) for r in references], k=[1, 5])
    assert score_rankings(Task, predictions, (1, 5)) == {**expected, "num_queries": 40}


def test_retrieve_keeps_scores_aligned_with_the_ranking(model, processor, image_root):
    from gcl_hf.retrieval.evaluation import retrieve, score_rankings

    task = _task(image_root)
    q = encode_dataset(model, processor, task.queries, image_root=image_root, show_progress=False)
    c = encode_dataset(model, processor, task.corpus, image_root=image_root, show_progress=False)
    found = retrieve(model, processor, task, 7, batch_size=4, show_progress=False)
    assert found.query_ids == list(task.queries["id"]) and all(len(r) == 7 for r in found.ids)
    index = {cid: j for j, cid in enumerate(task.corpus["id"])}
    for n, (ranked, scores) in enumerate(zip(found.ids, found.scores)):
        np.testing.assert_allclose(scores, [float(q[n] @ c[index[x]]) for x in ranked], atol=1e-5)
        assert scores == sorted(scores, reverse=True)
    assert list(found.as_dict()["q2"]) == found.ids[2]
    assert score_rankings(task, found.ids, (1, 5)) == pytest.approx({**_hand_recall(task, q @ c.T, (1, 5)),
                                                                     "num_queries": 6})
    cands = {qid: ["c3", "c0", "c1"] for qid in task.queries["id"]}
    ranked, scores = rank_corpus(_task(image_root, metric="precision_at_1", candidates=cands), q, c, 2,
                                 return_scores=True)
    for n, (ids, s) in enumerate(zip(ranked, scores)):
        assert len(ids) == 2 and set(ids) <= {"c3", "c0", "c1"}
        np.testing.assert_allclose(s, [float(q[n] @ c[index[x]]) for x in ids], atol=1e-5)
