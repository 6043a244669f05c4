"""The demo corpus: determinism, the train/test split, the complementary-content property measured on the
generated data, content relevance of the nine tasks, and the tiny backbone."""

from __future__ import annotations

import os
from collections import Counter

import pytest
import torch

from gcl_hf.benchmarks.task import MODALITIES
from gcl_hf.demo.backbone import (
    DemoBackboneConfig,
    build_demo_backbone,
    build_demo_processor,
    pixel_values,
)
from gcl_hf.demo.corpus import DemoCorpusConfig, build_demo_corpus
from gcl_hf.demo.items import DemoItem
from gcl_hf.demo.tasks import (
    build_retrieval_tasks,
    candidate_id,
    query_id,
    relevant_items,
)

TINY = DemoCorpusConfig(num_train=40, num_test=24, seed=3)
#: Relevant candidates per query in each cell of a 2x2 group (see gcl_hf.demo.tasks).
EXPECTED_RELEVANT = {"image->image": 2, "image->text": 4, "image->fused": 2, "text->image": 4, "text->text": 2,
                     "text->fused": 2, "fused->image": 2, "fused->text": 2, "fused->fused": 1}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_demo_corpus(tmp_path_factory.mktemp("demo"), TINY, progress=False)


def _png_bytes(dataset, column="image"):
    return [row["bytes"] for row in dataset.with_format("arrow")[column].to_pylist()]


def test_same_seed_same_bytes_and_captions(corpus, tmp_path):
    again = build_demo_corpus(tmp_path / "again", TINY, progress=False)
    assert _png_bytes(again.train) == _png_bytes(corpus.train)
    assert again.train["text"][:] == corpus.train["text"][:]
    for column in ("image", "query_image"):
        assert _png_bytes(again.test, column) == _png_bytes(corpus.test, column)
    for column in ("text", "query_text", "item", "fused_key"):
        assert again.test[column][:] == corpus.test[column][:]
    for rel in corpus.test["image_path"][:] + corpus.test["query_image_path"][:]:
        with open(os.path.join(corpus.image_root, rel), "rb") as a, open(os.path.join(again.image_root, rel), "rb") as b:
            assert a.read() == b.read()
    other = build_demo_corpus(tmp_path / "other", DemoCorpusConfig(num_train=40, num_test=24, seed=4), progress=False)
    assert other.train["text"][:] != corpus.train["text"][:] and other.test["item"][:] != corpus.test["item"][:]


def test_config_validation_and_quick_preset(tmp_path):
    assert (DemoCorpusConfig.quick(seed=7).num_test, DemoCorpusConfig.quick(seed=7).seed) == (96, 7)
    with pytest.raises(ValueError, match="holdout_fraction"):
        DemoCorpusConfig(holdout_fraction=1.5)
    with pytest.raises(ValueError, match="multiple of 4"):
        DemoCorpusConfig(num_test=10)
    with pytest.raises(ValueError, match="ItemLayout"):
        DemoCorpusConfig(linked_objects=0)
    with pytest.raises(RuntimeError, match="distinct test groups"):  # far more groups than held-out link sets
        build_demo_corpus(tmp_path, DemoCorpusConfig(num_train=0, num_test=4000, linked_objects=1,
                                                     holdout_fraction=0.01), progress=False)


def test_split_is_disjoint_by_linked_objects(corpus):
    train = [DemoItem.from_json(s) for s in corpus.train["item"]]
    test = [DemoItem.from_json(s) for s in corpus.test["item"]]
    assert len(train) == TINY.num_train and len(test) == TINY.num_test
    assert not {i.link_key for i in train} & {i.link_key for i in test}
    assert not {i.text_key for i in train} & {i.text_key for i in test}  # no test caption content is trained on
    # one set of linked objects per group of four, groups distinct
    by_group = Counter(corpus.test["group"][:])
    assert set(by_group.values()) == {4} and len(by_group) == TINY.num_test // 4
    assert len({i.link_key for i in test}) == len(by_group)
    # the two views of a test item are different renderings and different paraphrases
    assert all(a != b for a, b in zip(_png_bytes(corpus.test), _png_bytes(corpus.test, "query_image")))
    assert all(a != b for a, b in zip(corpus.test["text"][:], corpus.test["query_text"][:]))


def test_fused_target_not_identifiable_from_the_query_image_or_text_alone(corpus):
    """The corpus property, counted on the generated test items: for every fused query, another test item
    shows the same picture content (and tells other text), another tells the same caption content (and shows
    another picture), and no other item has the same fused content."""
    items = [DemoItem.from_json(s) for s in corpus.test["item"]]
    image_count = Counter(i.image_key for i in items)
    text_count = Counter(i.text_key for i in items)
    fused_count = Counter(i.fused_key for i in items)
    for item in items:
        assert image_count[item.image_key] == 2 and text_count[item.text_key] == 2 and fused_count[item.fused_key] == 1
        same_image = [o for o in items if o.image_key == item.image_key and o is not item]
        same_text = [o for o in items if o.text_key == item.text_key and o is not item]
        assert all(o.text_key != item.text_key for o in same_image)
        assert all(o.image_key != item.image_key for o in same_text)
    # the stored keys are the items' content keys
    assert corpus.test["image_key"][:] == [i.image_key for i in items]
    assert corpus.test["fused_key"][:] == [i.fused_key for i in items]


def test_relevant_items_rule():
    # items 0,1 share query content "a"; item 2 holds the same candidate content as item 1
    assert relevant_items(["a", "a", "b"], ["x", "y", "y"]) == [{0, 1, 2}, {0, 1, 2}, {1, 2}]
    assert relevant_items(["a", "b"], ["x", "y"]) == [{0}, {1}]
    with pytest.raises(ValueError, match="query keys"):
        relevant_items(["a"], ["x", "y"])


def test_mixed_pool_tasks_relevance_and_exclusions(corpus):
    tasks = corpus.tasks()
    n = TINY.num_test
    assert [t.name for t in tasks] == [f"scenes:{c}" for c in EXPECTED_RELEVANT]
    ids = tasks[0].corpus["id"]
    assert len(ids) == len(set(ids)) == 3 * n
    assert sorted(tasks[0].corpus["modality"]) == sorted(list(MODALITIES) * n)
    groups = dict(zip(corpus.test["id"][:], corpus.test["group"][:]))
    for task in tasks:
        q, c = task.meta["query_modality"], task.meta["candidate_modality"]
        cell = task.name.split(":")[1]
        assert task.corpus is tasks[0].corpus and len(task.queries) == n
        modality_of = dict(zip(task.corpus["id"], task.corpus["modality"]))
        for qid, relevant in task.qrels.items():
            item = qid.split(":")[0]
            assert len(relevant) == EXPECTED_RELEVANT[cell], (cell, qid)
            assert candidate_id(item, c) in relevant  # its own item's candidate is always relevant
            assert {modality_of[r] for r in relevant} == {c}
            assert {groups[r.split(":")[0]] for r in relevant} == {groups[item]}  # only its own group
            # excluded: the other modalities' right answers, never a candidate of the target modality
            assert {candidate_id(item, m) for m in MODALITIES if m != c} <= task.exclude[qid]
            assert all(modality_of[e] != c for e in task.exclude[qid])
        for row in task.queries:
            assert (row["image"] is not None) == ("image" in q) and (row["text"] is not None) == ("text" in q)
            if row["image"] is not None:
                assert os.path.isfile(os.path.join(task.image_root, row["image"]))
    # fused query → fused: excluded are the 2 pictures showing its image content and the 2 captions with its text
    fused = tasks[-1]
    assert {len(e) for e in fused.exclude.values()} == {4}
    # queries come from the query view, the pool from the candidate view
    text_query = tasks[3].queries[0]
    item = text_query["id"].split(":")[0]
    row = corpus.test[corpus.test["id"][:].index(item)]
    assert text_query["text"] == row["query_text"] and text_query["id"] == query_id(item, "text")
    assert row["text"] in tasks[3].corpus["text"] and row["query_text"] not in tasks[3].corpus["text"]


def test_local_pools_and_no_exclusion(corpus):
    local = build_retrieval_tasks(corpus.test, corpus.image_root, pool="local")
    for task in local:
        assert len(task.corpus) == TINY.num_test and task.exclude is None
        assert set(task.corpus["modality"]) == {task.meta["candidate_modality"]}
        assert all(rel <= set(task.corpus["id"]) for rel in task.qrels.values())
    assert all(t.exclude is None for t in corpus.tasks(exclude_counterparts=False))
    with pytest.raises(ValueError, match="pool"):
        build_retrieval_tasks(corpus.test, corpus.image_root, pool="global")
    with pytest.raises(ValueError, match="fused_key"):
        build_retrieval_tasks(corpus.test.remove_columns("fused_key"), corpus.image_root)


def test_backbone_forward_on_processor_output(corpus):
    processor = build_demo_processor(image_size=TINY.image_size)
    model = build_demo_backbone(processor.tokenizer, seed=0).eval()
    assert model.config.text_config.eos_token_id == processor.tokenizer.eos_token_id
    batch = corpus.train[:6]
    inputs = processor(images=batch["image"], text=batch["text"], padding=True, return_tensors="pt")
    assert inputs["pixel_values"].shape == (6, 3, TINY.image_size, TINY.image_size)
    with torch.no_grad():
        out = model(**inputs)
        alone = model.get_text_features(**processor(text=batch["text"][:1], return_tensors="pt")).pooler_output
        padded = model.get_text_features(input_ids=inputs["input_ids"],
                                         attention_mask=inputs["attention_mask"]).pooler_output
    assert out.logits_per_image.shape == (6, 6) and torch.isfinite(out.logits_per_image).all()
    assert out.text_embeds.shape == out.image_embeds.shape == (6, DemoBackboneConfig().projection_dim)
    torch.testing.assert_close(padded[:1], alone, atol=1e-5, rtol=1e-5)  # pooling at EOS ignores padding
    a, b, c = build_demo_backbone(seed=5), build_demo_backbone(seed=5), build_demo_backbone(seed=6)
    pa, pb, pc = (next(m.text_model.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_fast_pixel_values_match_the_processor(corpus):
    processor = build_demo_processor(image_size=TINY.image_size)
    images = corpus.train[:5]["image"]
    expected = processor(images=images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixel_values(images, processor), expected, atol=1e-5, rtol=0)
    odd = [im.resize((40, 56)) for im in images]  # other sizes fall back to the processor's resize and crop
    torch.testing.assert_close(pixel_values(odd, processor), processor(images=odd, return_tensors="pt")["pixel_values"])


def test_processor_and_backbone_save_and_reload_offline(tmp_path):
    from transformers import AutoProcessor, CLIPModel

    processor = build_demo_processor()
    model = build_demo_backbone(processor.tokenizer, seed=1)
    processor.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    processor2, model2 = AutoProcessor.from_pretrained(tmp_path), CLIPModel.from_pretrained(tmp_path)
    text = "a drawing of one tiny cyan cross in the upper left, and out of frame a big red ring at the bottom"
    ids = processor.tokenizer(text)["input_ids"]
    assert processor2.tokenizer(text)["input_ids"] == ids and processor.tokenizer.unk_token_id not in ids
    assert model2.config.text_config.eos_token_id == processor2.tokenizer.eos_token_id == ids[-1]
    assert torch.equal(model2.text_projection.weight, model.text_projection.weight)


def test_train_arrays_and_their_dataset_give_the_same_tensors(corpus):
    from gcl_hf.demo.backbone import normalize_pixels
    from gcl_hf.demo.training import prepare_train_tensors

    processor = build_demo_processor(image_size=TINY.image_size)
    from_arrays = prepare_train_tensors(corpus.train_pairs, processor, chunk_size=16, progress=False)
    from_dataset = prepare_train_tensors(corpus.train, processor, chunk_size=16, progress=False)
    assert len(from_arrays) == TINY.num_train
    torch.testing.assert_close(from_arrays.pixel_values, from_dataset.pixel_values, atol=1e-5, rtol=0)
    assert torch.equal(from_arrays.input_ids, from_dataset.input_ids)
    with pytest.raises(ValueError, match="normalize_pixels expects"):
        normalize_pixels(torch.zeros(2, 32, 32, 3, dtype=torch.uint8), processor)
