"""Demo items and scenes: what a picture shows, what a caption tells, the 2×2 test groups, the tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

from gcl_hf.demo.backbone import build_demo_tokenizer, demo_max_length
from gcl_hf.demo.items import (
    MARKERS,
    DemoItem,
    ItemLayout,
    caption,
    caption_vocabulary,
    sample_group,
    sample_item,
)
from gcl_hf.demo.scenes import (
    COLOURS,
    GRID,
    POSITION_PHRASES,
    SIZES,
    Scene,
    SceneObject,
    render_scene,
)


def _named(text: str, o: SceneObject) -> bool:
    """Whether ``text`` names ``o`` with its size, colour, shape and position."""
    return any(f"{w} {o.colour} {o.shape} {p}" in text for w in SIZES[o.size][1] for p in POSITION_PHRASES[o.cell])


def test_caption_names_linked_and_text_only_objects_never_image_only():
    rng = np.random.default_rng(0)
    for i in range(300):
        layout = ItemLayout(linked=1 + i % 3, image_only=i % 2 + 1, text_only=1 + i % 2)
        item = sample_item(rng, layout)
        text = caption(item, rng)
        head, marker, tail = next(text.partition(m) for m in MARKERS if m in text)
        assert marker, text
        assert all(_named(head, o) for o in item.linked), text
        assert all(_named(tail, o) and not _named(head, o) for o in item.text_only), text
        for o in item.image_only:  # never named: its (colour, shape) does not occur at all
            assert f"{o.colour} {o.shape}" not in text, (text, o)
    # canonical caption without rng
    item = DemoItem((SceneObject(0, "circle", "red", "small"),), (SceneObject(4, "ring", "blue", "large"),),
                    (SceneObject(8, "cross", "green", "large"),))
    assert caption(item) == ("a small red circle at the top left, and beside the picture a large green cross "
                             "at the bottom right")


def test_picture_draws_linked_and_image_only_objects_never_text_only():
    size, cell = 48, 48 / GRID
    linked = (SceneObject(0, "square", "red", "large"),)
    image_only = (SceneObject(8, "circle", "blue", "large"),)
    text_only = (SceneObject(4, "square", "green", "large"),)
    item = DemoItem(linked, image_only, text_only)
    pixels = np.asarray(render_scene(item.picture, size))
    for o in linked + image_only:
        row, col = divmod(o.cell, GRID)
        assert tuple(pixels[int((row + 0.5) * cell), int((col + 0.5) * cell)]) == COLOURS[o.colour]
    assert not (pixels == COLOURS["green"]).all(-1).any()  # the text-only object is not drawn
    assert tuple(pixels[24, 24]) == (205, 205, 205)
    # jittered views differ but keep size and mode
    a, b = (render_scene(item.picture, size, np.random.default_rng(s)) for s in (1, 2))
    assert a.size == b.size == (size, size) and a.mode == "RGB" and a.tobytes() != b.tobytes()


def test_group_is_two_by_two_and_only_the_fused_content_is_unique():
    rng = np.random.default_rng(3)
    for _ in range(50):
        group = sample_group(rng)
        assert len(group) == 4 and len({g.link_key for g in group}) == 1
        images = [g.image_key for g in group]
        texts = [g.text_key for g in group]
        assert images[0] == images[1] != images[2] == images[3]
        assert texts[0] == texts[2] != texts[1] == texts[3]
        assert len({g.fused_key for g in group}) == 4
        # the variants differ in every object's (shape, colour), and no kind repeats in the group
        objects = group[0].linked + group[0].image_only + group[3].image_only + group[0].text_only + group[3].text_only
        assert len({o.kind for o in objects}) == len(objects) == 6


def test_item_validation_and_json_round_trip():
    o = SceneObject(0, "circle", "red", "small")
    with pytest.raises(ValueError, match="shape, colour"):
        DemoItem((o,), (SceneObject(1, "circle", "red", "large"),))
    with pytest.raises(ValueError, match="distinct cells"):
        DemoItem((o,), (SceneObject(0, "ring", "red", "large"),))
    with pytest.raises(ValueError, match="linked"):
        DemoItem(())
    with pytest.raises(ValueError, match="invalid scene object"):
        SceneObject(9, "circle", "red", "small")
    with pytest.raises(ValueError, match="ItemLayout"):
        ItemLayout(linked=0)
    with pytest.raises(ValueError, match="test groups"):
        sample_group(np.random.default_rng(0), ItemLayout(image_only=0))
    item = sample_item(np.random.default_rng(5))
    assert DemoItem.from_json(item.to_json()) == item
    assert item.content_key("image,text") == item.fused_key
    with pytest.raises(ValueError, match="modality"):
        item.content_key("video")
    assert Scene(item.linked + item.image_only) == item.picture


def test_tokenizer_covers_every_caption_without_unk():
    tokenizer = build_demo_tokenizer()
    assert len(tokenizer) == len(caption_vocabulary()) + 4
    assert tokenizer.eos_token_id != 2  # CLIP's legacy argmax pooling would kick in
    rng = np.random.default_rng(1)
    captions = [caption(sample_item(rng), rng) for _ in range(1000)]
    for text, ids in zip(captions, tokenizer(captions)["input_ids"]):
        assert tokenizer.unk_token_id not in ids
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert len(ids) <= demo_max_length() == tokenizer.model_max_length
        assert " ".join(tokenizer.convert_ids_to_tokens(ids[1:-1])) == text.replace(",", " ,")
    assert tokenizer.unk_token_id in tokenizer("a purple hexagon")["input_ids"]
    bigger = ItemLayout(linked=3, image_only=2, text_only=2)
    longest = max(len(tokenizer(caption(sample_item(rng, bigger), rng))["input_ids"]) for _ in range(300))
    assert demo_max_length(ItemLayout()) < longest <= demo_max_length(bigger)
