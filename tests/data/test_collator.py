"""gcl_hf.data.collator.GCLCollator and gcl_hf.data.images.open_image."""

from __future__ import annotations

import io
import json
import logging
import pickle

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from gcl_hf.data.collator import GCLCollator
from gcl_hf.data import DataFormatError, load_image_text_pairs
from gcl_hf.data.images import ImageLoadError, open_image
from gcl_hf.testing import byte_level_tokenizer, tiny_clip, tiny_siglip
from gcl_hf.testing import tiny_processor as make_processor

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)


def _png_bytes(array=PIXELS) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "img.png"
    path.write_bytes(_png_bytes())
    return path


def _records(image, captions=("a red cube", "two blue spheres")):
    return [{"image": image, "text": c} for c in captions]


def test_batch_shapes_and_dtypes(tiny_processor, png):
    collator = GCLCollator(tiny_processor)
    batch = collator(_records(str(png), ["a", "bb", "ccc"]))
    assert set(batch) == {"pixel_values", "input_ids", "attention_mask"}
    assert batch["pixel_values"].shape == (3, 3, 32, 32) and batch["pixel_values"].dtype == torch.float32
    assert batch["input_ids"].dtype == torch.int64 and batch["attention_mask"].dtype == torch.int64
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    # the batch runs through a real backbone
    out = tiny_clip()(**batch, return_loss=True)
    assert torch.isfinite(out.loss)


def test_dynamic_padding_pads_to_longest_not_max(tiny_processor, png):
    collator = GCLCollator(tiny_processor)
    assert collator.padding == "longest" and collator.max_length == 32
    batch = collator(_records(str(png), ["ab", "abcdef"]))
    # byte-level tokens + BOS + EOS: the longest caption has 6 + 2 tokens
    assert batch["input_ids"].shape == (2, 8)
    assert batch["attention_mask"].tolist() == [[1] * 4 + [0] * 4, [1] * 8]
    fixed = GCLCollator(tiny_processor, padding="max_length")(_records(str(png), ["ab", "abcdef"]))
    assert fixed["input_ids"].shape == (2, 32)
    rounded = GCLCollator(tiny_processor, pad_to_multiple_of=16)(_records(str(png), ["ab", "abcdef"]))
    assert rounded["input_ids"].shape == (2, 16)


def test_long_caption_truncated_to_max_length_keeping_eos(tiny_processor, png):
    tokenizer = tiny_processor.tokenizer
    long_caption = "a very long caption " * 20
    batch = GCLCollator(tiny_processor)(_records(str(png), [long_caption, "short"]))
    assert batch["input_ids"].shape == (2, 32)
    assert batch["input_ids"][0, -1].item() == tokenizer.eos_token_id  # CLIP pools at EOS
    short = GCLCollator(tiny_processor, max_length=10)(_records(str(png), [long_caption]))
    assert short["input_ids"].shape == (1, 10)


def test_for_model_caps_at_position_embeddings(tiny_processor):
    model = tiny_clip(max_length=16)
    collator = GCLCollator.for_model(model, tiny_processor)
    assert collator.max_length == 16 and collator.padding == "longest"
    batch = collator(_records(PIXELS, ["x" * 100]))
    assert batch["input_ids"].shape == (1, 16)
    model(**batch)  # would fail with positions beyond the embeddings table
    assert GCLCollator.for_model(model, tiny_processor, max_length=8).max_length == 8


def test_tokenizer_without_a_limit(png, caplog):
    processor = make_processor()
    processor.tokenizer.model_max_length = int(1e30)  # what transformers sets when a tokenizer declares none
    model = tiny_clip(max_length=16)
    collator = GCLCollator.for_model(model, processor)  # the text tower's positions, not the tokenizer's "limit"
    batch = collator(_records(PIXELS, ["x" * 100]))
    assert collator.max_length == 16 and batch["input_ids"].shape == (1, 16)
    model(**batch)
    with pytest.raises(ValueError, match="max_length 40 is more than the text tower's 16 positions"):
        GCLCollator.for_model(model, processor, max_length=40)  # would fail inside the model's forward
    with caplog.at_level(logging.WARNING, logger="gcl_hf.data.collator"):
        assert GCLCollator(processor).max_length == 77
    assert "declares no length limit" in caplog.text and "GCLCollator.for_model" in caplog.text


def test_siglip_defaults_to_max_length_padding():
    from transformers import SiglipProcessor

    try:
        from transformers import SiglipImageProcessorPil as ImageProcessor
    except ImportError:  # pragma: no cover - older transformers
        from transformers import SiglipImageProcessor as ImageProcessor
    processor = SiglipProcessor(image_processor=ImageProcessor(size={"height": 32, "width": 32}),
                                tokenizer=byte_level_tokenizer(24))
    collator = GCLCollator(processor)
    assert collator.padding == "max_length" and collator.max_length == 24
    batch = collator(_records(PIXELS, ["ab", "abc"]))
    assert batch["input_ids"].shape == (2, 24) and batch["pixel_values"].shape == (2, 3, 32, 32)
    assert GCLCollator(processor, padding="longest")(_records(PIXELS, ["ab"]))["input_ids"].shape == (1, 4)
    # a SigLIP backbone with a generic processor: for_model picks max_length padding too
    assert GCLCollator.for_model(tiny_siglip(), make_processor()).padding == "max_length"


def test_a_gcl_models_family_sets_padding_and_length():
    """SigLIP 2 was trained on captions padded to 64 tokens: a GCLModel brings that length even when its tokenizer
    declares no limit and its tower has more positions (the collator used to pad to the positions, 128)."""
    from transformers import Siglip2Config, Siglip2Model

    from gcl_hf import GCLModel

    processor = make_processor()
    processor.tokenizer.model_max_length = int(1e30)
    text = dict(vocab_size=len(processor.tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=128)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, patch_size=16)
    model = GCLModel.from_backbone(Siglip2Model(Siglip2Config(text_config=text, vision_config=vision)))
    collator = GCLCollator.for_model(model, processor)  # a CLIP processor: the model's family decides
    assert (collator.max_length, collator.padding) == (64, "max_length")
    assert GCLCollator.for_model(model, processor, max_length=100).max_length == 100  # explicit wins
    clip = GCLCollator.for_model(GCLModel.from_backbone(tiny_clip(max_length=16)), processor)
    assert (clip.max_length, clip.padding) == (16, "longest")


def test_every_image_kind_gives_the_same_pixels(tiny_processor, png, tmp_path):
    collator = GCLCollator(tiny_processor, image_root=tmp_path)
    reference = collator(_records(Image.fromarray(PIXELS), ["x"]))["pixel_values"]
    kinds = {
        "numpy uint8": PIXELS,
        "numpy float": PIXELS.astype(np.float32) / 255.0,
        "CHW tensor": torch.from_numpy(PIXELS).permute(2, 0, 1),
        "absolute path": str(png),
        "relative path": "img.png",
        "bytes": _png_bytes(),
        "datasets dict bytes": {"bytes": _png_bytes(), "path": None},
        "datasets dict path": {"bytes": None, "path": str(png)},
        "RGBA PIL": Image.fromarray(np.dstack([PIXELS, np.full(PIXELS.shape[:2], 255, np.uint8)])),
    }
    for name, image in kinds.items():
        got = collator(_records(image, ["x"]))["pixel_values"]
        assert torch.allclose(got, reference, atol=1e-5), name
    gray = collator(_records(Image.fromarray(PIXELS[..., 0]), ["x"]))["pixel_values"]
    assert gray.shape == (1, 3, 32, 32)


def test_corrupt_png_names_row_id_and_path(tiny_processor, png, tmp_path):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is garbage")
    records = [{"image": str(png), "text": "ok", "id": "a"}, {"image": str(bad), "text": "bad", "id": "b"}]
    with pytest.raises(ImageLoadError) as info:
        GCLCollator(tiny_processor)(records)
    message = str(info.value)
    assert "batch record 1" in message and "id 'b'" in message and str(bad) in message
    assert info.value.path == str(bad) and info.value.column == "image"
    missing = [{"image": "gone.png", "text": "t", "__index__": 17}]
    with pytest.raises(ImageLoadError, match=r"batch record 0, __index__ 17.*gone\.png.*file not found"):
        GCLCollator(tiny_processor, image_root=tmp_path)(missing)


def test_truncated_png_is_an_error(tiny_processor, tmp_path):
    path = tmp_path / "half.png"
    path.write_bytes(_png_bytes()[:200])
    with pytest.raises(ImageLoadError, match="half.png"):
        GCLCollator(tiny_processor)(_records(str(path), ["x"]))


@pytest.mark.parametrize("text,reason", [("", "empty caption"), ("  \n", "empty caption"),
                                         (None, "missing caption"), (3, "caption must be a string"),
                                         ("a\x00b", "caption contains a NUL character")])
def test_bad_caption_raises(tiny_processor, text, reason):
    with pytest.raises(DataFormatError, match=rf"batch record 0, field 'text': {reason}"):
        GCLCollator(tiny_processor)([{"image": PIXELS, "text": text}])


def test_skip_drops_bad_records_and_counts(tiny_processor, png, tmp_path, caplog):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"garbage")
    records = [{"image": str(png), "text": "one"}, {"image": str(bad), "text": "two"},
               {"image": str(png), "text": ""}, {"image": str(png), "text": "four"}, {"text": "five"}]
    collator = GCLCollator(tiny_processor, errors="skip", return_records=True)
    with caplog.at_level(logging.WARNING, logger="gcl_hf.data.collator"):
        batch = collator(records)
    assert batch["pixel_values"].shape[0] == 2 and batch["input_ids"].shape[0] == 2
    assert [r["text"] for r in batch["records"]] == ["one", "four"]
    assert collator.skipped == 3
    assert "corrupt.png" in caplog.text and "empty caption" in caplog.text
    with pytest.raises(ValueError, match="all 1 records of the batch were skipped"):
        collator([{"image": str(bad), "text": "x"}])
    assert collator.skipped == 4


def test_custom_columns_and_argument_checks(tiny_processor):
    collator = GCLCollator(tiny_processor, image_column="img", text_column="caption")
    assert collator([{"img": PIXELS, "caption": "c"}])["input_ids"].shape[0] == 1
    with pytest.raises(DataFormatError, match="field 'caption': column missing"):
        collator([{"img": PIXELS, "text": "c"}])
    with pytest.raises(ValueError, match="padding"):
        GCLCollator(tiny_processor, padding="shortest")
    with pytest.raises(ValueError, match="errors"):
        GCLCollator(tiny_processor, errors="ignore")


def test_collator_pickles(tiny_processor, png):
    collator = GCLCollator(tiny_processor, max_length=20, errors="skip")
    clone = pickle.loads(pickle.dumps(collator))
    assert (clone.max_length, clone.padding, clone.errors) == (20, "longest", "skip")
    records = _records(str(png), ["same caption", "another"])
    for key, value in collator(records).items():
        assert torch.equal(value, clone(records)[key])
    error = pickle.loads(pickle.dumps(ImageLoadError("bad", row=3, column="image", path="/x.png")))
    assert (error.row, error.column, error.path) == (3, "image", "/x.png") and "/x.png" in str(error)


def test_dataloader_with_workers_over_lazy_dataset(tiny_processor, tmp_path):
    records = []
    for i in range(8):
        name = f"{i // 4:05d}/{i:09d}.png"
        (tmp_path / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "images" / name).write_bytes(_png_bytes(np.full((10 + i, 12, 3), 30 * i, np.uint8)))
        records.append({"id": str(i), "image": name, "conversations": [
            {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "c" * (i + 1)}]})
    (tmp_path / "lcs.json").write_text(json.dumps(records))
    dataset = load_image_text_pairs(tmp_path / "lcs.json", image_root=tmp_path / "images", id_column="id")
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=GCLCollator(tiny_processor))
    batches = list(loader)
    assert [b["pixel_values"].shape[0] for b in batches] == [4, 4]
    assert [b["input_ids"].shape[1] for b in batches] == [6, 10]  # each batch padded to its own longest
    # a datasets.Image(decode=False) column goes through the same path
    lazy = datasets.Dataset.from_dict({"image": [str(tmp_path / "images" / r["image"]) for r in records[:2]],
                                       "text": ["x", "y"]}).cast_column("image", datasets.Image(decode=False))
    assert GCLCollator(tiny_processor)(list(lazy))["pixel_values"].shape == (2, 3, 32, 32)


def test_open_image_array_checks():
    assert open_image(np.zeros((4, 5), np.uint16)).size == (5, 4)
    assert open_image(np.ones((4, 5, 1), bool)).mode == "RGB"
    assert open_image(np.full((4, 5, 3), 200.0)).getpixel((0, 0)) == (200, 200, 200)  # [0, 255] floats
    for bad, reason in [(np.zeros((5, 6, 7), np.uint8), "not an image"), (np.full((2, 2), np.nan), "NaN"),
                        (np.full((2, 2), -3.0), "expected"), (object(), "unsupported image type"),
                        (b"", "empty image bytes"), ({"path": None}, "neither")]:
        with pytest.raises(ImageLoadError, match=reason):
            open_image(bad, row=0, column="image")


def test_collator_tokenizes_a_literal_special_token_as_text(png):
    processor = make_processor()
    collator = GCLCollator.for_model(tiny_clip(), processor)
    batch = collator([{"image": str(png), "text": "a <|endoftext|> red cube"}])
    eos = processor.tokenizer.eos_token_id
    ids = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
    assert ids.count(eos) == 1 and ids[-1] == eos  # only the tokenizer's own end token
