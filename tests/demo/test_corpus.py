"""The demo's rendered-scene corpus, its retrieval tasks, tokenizer and tiny backbone."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from gcl_hf.benchmarks.task import MODALITIES
from gcl_hf.demo.backbone import (
    DemoBackboneConfig,
    build_demo_backbone,
    build_demo_processor,
    build_demo_tokenizer,
    demo_max_length,
    pixel_values,
)
from gcl_hf.demo.corpus import (
    DemoCorpusConfig,
    build_demo_corpus,
    build_retrieval_tasks,
    candidate_id,
    query_id,
)
from gcl_hf.demo.scenes import (
    COLOURS,
    GRID,
    POSITION_PHRASES,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
    caption_vocabulary,
    describe_scene,
    render_scene,
    sample_scene,
)

TINY = DemoCorpusConfig(num_train=40, num_test=12, seed=3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_demo_corpus(tmp_path_factory.mktemp("demo"), TINY, progress=False)


def _png_bytes(dataset, column="image"):
    return [row["bytes"] for row in dataset.with_format("arrow")[column].to_pylist()]


def _scene(row_json: str) -> Scene:
    return Scene(tuple(SceneObject(**o) for o in json.loads(row_json)))


def test_same_seed_same_bytes_and_captions(corpus, tmp_path):
    again = build_demo_corpus(tmp_path / "again", TINY, progress=False)
    assert _png_bytes(again.train) == _png_bytes(corpus.train)
    assert again.train["text"] == corpus.train["text"]
    assert _png_bytes(again.test) == _png_bytes(corpus.test)
    assert _png_bytes(again.test, "query_image") == _png_bytes(corpus.test, "query_image")
    assert again.test["text"] == corpus.test["text"]
    assert again.test["query_text"] == corpus.test["query_text"]
    for rel in corpus.test["image_path"][:] + corpus.test["query_image_path"][:]:
        with open(os.path.join(corpus.image_root, rel), "rb") as a, open(os.path.join(again.image_root, rel), "rb") as b:
            assert a.read() == b.read()


def test_other_seed_other_corpus(corpus, tmp_path):
    other = build_demo_corpus(tmp_path / "other", DemoCorpusConfig(num_train=40, num_test=12, seed=4), progress=False)
    assert other.train["text"] != corpus.train["text"]
    assert _png_bytes(other.train) != _png_bytes(corpus.train)
    assert other.test["scene"] != corpus.test["scene"]


def test_quick_preset_and_validation():
    quick = DemoCorpusConfig.quick(seed=7)
    assert (quick.num_train, quick.num_test, quick.seed) == (2_000, 100, 7)
    with pytest.raises(ValueError, match="holdout_fraction"):
        DemoCorpusConfig(holdout_fraction=1.5)


def test_too_many_test_items_for_the_scene_space_is_an_error(tmp_path):
    # one-object scenes: 9 cells × 6 shapes × 8 colours × 2 sizes = 864, ~5 % held out (~43)
    config = DemoCorpusConfig(num_train=0, num_test=100, max_objects=1, holdout_fraction=0.05)
    with pytest.raises(RuntimeError, match="distinct test scenes"):
        build_demo_corpus(tmp_path, config, progress=False)


def test_splits_are_disjoint_and_test_scenes_unique(corpus):
    train = {_scene(s).key for s in corpus.train["scene"]}
    test = [_scene(s).key for s in corpus.test["scene"]]
    assert len(set(test)) == len(test) == TINY.num_test
    assert not train & set(test)
    assert len(corpus.train) == TINY.num_train
    # the two views of a test item are different renderings and different paraphrases
    assert all(a != b for a, b in zip(_png_bytes(corpus.test), _png_bytes(corpus.test, "query_image")))
    assert all(a != b for a, b in zip(corpus.test["text"], corpus.test["query_text"]))


def test_captions_name_every_attribute():
    rng = np.random.default_rng(0)
    for i in range(300):
        scene = sample_scene(rng, max_objects=3 if i % 2 else 5, repeat_prob=0.5)
        caption = describe_scene(scene, rng)
        groups: dict[tuple[str, str, str], list[int]] = {}
        for o in scene.objects:
            groups.setdefault((o.size, o.colour, o.shape), []).append(o.cell)
        for (size, colour, shape), cells in groups.items():
            count = {1: ("a", "one"), 2: ("two",), 3: ("three",), 4: ("four",), 5: ("five",)}[len(cells)]
            noun = shape if len(cells) == 1 else SHAPES[shape]
            heads = [f"{c} {w} {colour} {noun} " for c in count for w in SIZES[size][1]]
            assert any(h in caption for h in heads), (caption, scene)
            for cell in cells:
                assert any(p in caption for p in POSITION_PHRASES[cell]), (caption, cell)
        # no colour or shape that is not in the scene
        for colour in COLOURS:
            assert (colour in caption.split()) == any(o.colour == colour for o in scene.objects), caption


def test_rendering_draws_each_object_in_its_cell():
    size, cell = 48, 48 / GRID
    for shape in ("circle", "square", "triangle", "diamond", "cross"):
        objects = (SceneObject(0, shape, "red", "large"), SceneObject(8, shape, "blue", "small"))
        pixels = np.asarray(render_scene(Scene(objects), size))
        for o in objects:
            row, col = divmod(o.cell, GRID)
            centre = pixels[int((row + 0.5) * cell), int((col + 0.5) * cell)]
            assert tuple(centre) == COLOURS[o.colour], (shape, o)
        assert tuple(pixels[int(1.5 * cell), int(1.5 * cell)]) == (205, 205, 205)  # empty centre cell
    ring = np.asarray(render_scene(Scene((SceneObject(4, "ring", "green", "large"),)), size))
    assert tuple(ring[24, 24]) == (205, 205, 205) and (ring == COLOURS["green"]).all(-1).any()
    # jittered views differ from each other but keep the same size and mode
    a = render_scene(Scene(objects), size, np.random.default_rng(1))
    b = render_scene(Scene(objects), size, np.random.default_rng(2))
    assert a.size == b.size == (size, size) and a.mode == "RGB" and a.tobytes() != b.tobytes()


def test_retrieval_tasks_mixed_pool(corpus):
    tasks = corpus.tasks()
    n = TINY.num_test
    assert [t.name for t in tasks] == [
        f"scenes:{q}->{c}" for q in ("image", "text", "fused") for c in ("image", "text", "fused")
    ]
    corpus_ids = tasks[0].corpus["id"]
    assert len(corpus_ids) == len(set(corpus_ids)) == 3 * n
    assert sorted(tasks[0].corpus["modality"]) == sorted(list(MODALITIES) * n)
    for task in tasks:
        qm, cm = task.meta["query_modality"], task.meta["candidate_modality"]
        assert task.corpus is tasks[0].corpus  # one shared mixed pool
        assert len(task.queries) == n and set(task.queries["modality"]) == {qm}
        modality_of = dict(zip(task.corpus["id"], task.corpus["modality"]))
        assert set(task.qrels) == set(task.queries["id"])
        for qid, relevant in task.qrels.items():
            (rel,) = relevant
            assert modality_of[rel] == cm
            item = qid.split(":")[0]
            assert rel == candidate_id(item, cm)
            assert task.exclude[qid] == {candidate_id(item, m) for m in MODALITIES if m != cm}
        for row in task.queries:
            assert (row["image"] is not None) == ("image" in qm)
            assert (row["text"] is not None) == ("text" in qm)
            if row["image"] is not None:
                assert os.path.isfile(os.path.join(task.image_root, row["image"]))
    for row in tasks[0].corpus:
        assert (row["image"] is not None) == ("image" in row["modality"])
        assert (row["text"] is not None) == ("text" in row["modality"])
    # queries come from the query view, the pool from the candidate view
    text_query = tasks[3].queries[0]
    item = text_query["id"].split(":")[0]
    row = corpus.test[corpus.test["id"].index(item)]
    assert text_query["text"] == row["query_text"] and text_query["id"] == query_id(item, "text")
    assert row["text"] in tasks[3].corpus["text"] and row["query_text"] not in tasks[3].corpus["text"]


def test_retrieval_tasks_local_pool_and_no_exclusion(corpus):
    local = build_retrieval_tasks(corpus.test, corpus.image_root, pool="local")
    for task in local:
        assert len(task.corpus) == TINY.num_test and task.exclude is None
        assert set(task.corpus["modality"]) == {task.meta["candidate_modality"]}
        assert all(rel <= set(task.corpus["id"]) for rel in task.qrels.values())
    strict = corpus.tasks(exclude_own_views=False)
    assert all(t.exclude is None and len(t.corpus) == 3 * TINY.num_test for t in strict)
    with pytest.raises(ValueError, match="pool"):
        build_retrieval_tasks(corpus.test, corpus.image_root, pool="global")


def test_tokenizer_covers_every_caption_without_unk():
    tokenizer = build_demo_tokenizer()
    vocab = caption_vocabulary()
    assert len(tokenizer) == len(vocab) + 4
    assert tokenizer.eos_token_id != 2  # CLIP's legacy argmax pooling would kick in
    rng = np.random.default_rng(1)
    captions = [describe_scene(sample_scene(rng), rng) for _ in range(1000)]
    encoded = tokenizer(captions)["input_ids"]
    for caption, ids in zip(captions, encoded):
        assert tokenizer.unk_token_id not in ids
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert len(ids) <= demo_max_length() == tokenizer.model_max_length
        words = tokenizer.convert_ids_to_tokens(ids[1:-1])
        assert " ".join(words) == caption.replace(",", " ,")
    assert tokenizer.unk_token_id in tokenizer("a purple hexagon")["input_ids"]


def test_backbone_forward_on_processor_output(corpus):
    processor = build_demo_processor(image_size=TINY.image_size)
    model = build_demo_backbone(processor.tokenizer, seed=0).eval()
    assert model.config.text_config.eos_token_id == processor.tokenizer.eos_token_id
    assert model.config.text_config.pad_token_id == processor.tokenizer.pad_token_id
    batch = corpus.train[:6]
    inputs = processor(images=batch["image"], text=batch["text"], padding=True, return_tensors="pt")
    assert inputs["pixel_values"].shape == (6, 3, TINY.image_size, TINY.image_size)
    with torch.no_grad():
        out = model(**inputs)
        alone = model.get_text_features(**processor(text=batch["text"][:1], return_tensors="pt")).pooler_output
    assert out.logits_per_image.shape == (6, 6)
    assert out.text_embeds.shape == out.image_embeds.shape == (6, DemoBackboneConfig().projection_dim)
    assert torch.isfinite(out.logits_per_image).all()
    # pooling at EOS: padding a caption inside a batch does not change its embedding
    padded = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).pooler_output
    torch.testing.assert_close(padded[:1], alone, atol=1e-5, rtol=1e-5)
    # same seed → same weights; another seed → other weights
    a, b = build_demo_backbone(seed=5), build_demo_backbone(seed=5)
    c = build_demo_backbone(seed=6)
    pa, pb, pc = (next(m.text_model.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_fast_pixel_values_match_the_processor(corpus):
    processor = build_demo_processor(image_size=TINY.image_size)
    images = corpus.train[:5]["image"]
    expected = processor(images=images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixel_values(images, processor), expected, atol=1e-5, rtol=0)
    # other sizes fall back to the processor's resize and crop
    odd = [im.resize((40, 56)) for im in images]
    torch.testing.assert_close(pixel_values(odd, processor), processor(images=odd, return_tensors="pt")["pixel_values"])


def test_processor_and_backbone_save_and_reload_offline(tmp_path):
    from transformers import AutoProcessor, CLIPModel

    processor = build_demo_processor()
    model = build_demo_backbone(processor.tokenizer, seed=1)
    processor.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    processor2, model2 = AutoProcessor.from_pretrained(tmp_path), CLIPModel.from_pretrained(tmp_path)
    caption = "a drawing of two tiny cyan crosses in the upper left and at the bottom , and a big red ring"
    ids = processor.tokenizer(caption)["input_ids"]
    assert processor2.tokenizer(caption)["input_ids"] == ids
    assert model2.config.text_config.eos_token_id == processor2.tokenizer.eos_token_id == ids[-1]
    assert torch.equal(model2.text_projection.weight, model.text_projection.weight)
