"""GCLModel.encode: raw texts, images and fused items in one call, equal to the tensor encoders; the processor
found beside the model; truncation; errors naming the input index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gcl_hf import GCLModel
from gcl_hf.data.images import ImageLoadError
from gcl_hf.modeling.encode import ProcessorNotFoundError
from gcl_hf.testing import tiny_clip, tiny_processor, tiny_siglip

TEXTS = ["a red square", "two dogs playing in the snow", "x"]


def _image(seed: int, size=(40, 28)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _model(make=tiny_clip, fusion="sum") -> GCLModel:
    model = GCLModel.from_backbone(make(), fusion=fusion).eval()
    if model.fusion_head is not None:  # a trained-looking head, so that "mlp" differs from "sum"
        torch.manual_seed(1)
        torch.nn.init.normal_(model.fusion_head.fc2.weight, std=0.5)
    return model


def _reference(model, processor, images, texts, kind):
    """The tensor encoders on the processor's outputs (what encode must reproduce)."""
    limit = min(processor.tokenizer.model_max_length,
                model.config.backbone_config.text_config.max_position_embeddings)
    padding = "max_length" if model.config.backbone_config.model_type == "siglip" else "longest"
    text_kwargs = dict(padding=padding, truncation=True, max_length=limit)
    with torch.no_grad():
        if kind == "text":
            batch = processor(text=texts, return_tensors="pt", **text_kwargs)
            return model.encode_text(batch["input_ids"], batch["attention_mask"])
        if kind == "image":
            return model.encode_image(processor(images=images, return_tensors="pt")["pixel_values"])
        batch = processor(images=images, text=texts, return_tensors="pt", **text_kwargs)
        return model.encode_fused(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])


@pytest.mark.parametrize("make,fusion", [(tiny_clip, "sum"), (tiny_clip, "mean"), (tiny_clip, "mlp"),
                                         (tiny_siglip, "sum")])
def test_mixed_list_equals_the_tensor_encoders_in_input_order(tmp_path, make, fusion):
    model, processor = _model(make, fusion), tiny_processor()
    images = [_image(i) for i in range(3)]
    path = tmp_path / "photo.PNG"
    images[1].save(path)
    inputs = [TEXTS[0], images[0], {"image": images[2], "text": TEXTS[1]}, path, TEXTS[1],
              (str(path), TEXTS[2]), TEXTS[2], {"image": images[0]}, {"text": "holiday.jpg"}]
    got = model.encode(inputs, processor=processor, batch_size=2, convert_to="torch")
    assert got.shape == (len(inputs), model.embedding_dim)
    text = _reference(model, processor, None, [TEXTS[0], TEXTS[1], TEXTS[2], "holiday.jpg"], "text")
    image = _reference(model, processor, [images[0], images[1], images[0]], None, "image")
    fused = _reference(model, processor, [images[2], images[1]], [TEXTS[1], TEXTS[2]], "fused")
    expected = torch.stack([text[0], image[0], fused[0], image[1], text[1], fused[1], text[2], image[2], text[3]])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    # a fused row is neither its image nor its text
    assert not torch.allclose(got[2], _reference(model, processor, [images[2]], None, "image")[0], atol=1e-3)
    numpy_out = model.encode(inputs, processor=processor, batch_size=32)
    assert isinstance(numpy_out, np.ndarray) and numpy_out.dtype == np.float32
    np.testing.assert_allclose(numpy_out, expected.numpy(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("fusion", ["sum", "mean", "mlp"])
def test_normalize_false_gives_the_projections(fusion):
    model, processor = _model(fusion=fusion), tiny_processor()
    image = _image(3)
    inputs = [TEXTS[1], image, (image, TEXTS[0])]
    raw = model.encode(inputs, processor=processor, normalize=False, convert_to="torch")
    unit = model.encode(inputs, processor=processor, convert_to="torch")
    torch.testing.assert_close(F.normalize(raw, dim=-1), unit, atol=1e-6, rtol=0)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(3), atol=1e-3)
    with torch.no_grad():
        pixels = processor(images=[image], return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(raw[1], model.image_features(pixels)[0], atol=1e-6, rtol=0)


def test_texts_are_truncated_to_the_text_tower():
    model = GCLModel.from_backbone(tiny_clip(max_length=16)).eval()  # 16 positions, the tokenizer allows 32
    processor = tiny_processor(max_length=32)
    long_text = "a very long caption " * 10
    got = model.encode([long_text, _image(0)], processor=processor, convert_to="torch")
    batch = processor(text=[long_text], truncation=True, max_length=16, return_tensors="pt")
    assert batch["input_ids"].shape[1] == 16
    with torch.no_grad():
        torch.testing.assert_close(got[0], model.encode_text(batch["input_ids"], batch["attention_mask"])[0],
                                   atol=1e-6, rtol=0)


def test_processor_is_saved_beside_the_model_and_found_again(tmp_path):
    model, processor = _model(), tiny_processor()
    with pytest.raises(ProcessorNotFoundError, match=r"processor=AutoProcessor\.from_pretrained"):
        model.encode(["a dog"])
    model.processor = processor
    expected = model.encode(["a dog", _image(1)])
    model.save_pretrained(tmp_path / "gcl")
    assert (tmp_path / "gcl" / "tokenizer.json").is_file()
    reloaded = GCLModel.from_pretrained(tmp_path / "gcl").eval()
    assert reloaded.processor is None
    np.testing.assert_allclose(reloaded.encode(["a dog", _image(1)]), expected, atol=1e-6, rtol=0)
    assert reloaded.processor is not None  # found from name_or_path, then kept

    backbone_dir = tmp_path / "clip"  # a plain backbone with its processor: found from the backbone's name
    tiny_clip().save_pretrained(backbone_dir)
    processor.save_pretrained(backbone_dir)
    from_backbone = GCLModel.from_backbone(str(backbone_dir))
    assert from_backbone.encode(["a dog"]).shape == (1, from_backbone.embedding_dim)


def test_single_items_empty_lists_and_devices():
    model, processor = _model(), tiny_processor()
    single = model.encode("a dog", processor=processor)
    assert single.shape == (1, model.embedding_dim)
    np.testing.assert_allclose(single, model.encode(["a dog"], processor=processor), atol=1e-6, rtol=0)
    assert model.encode(_image(2), processor=processor).shape == (1, model.embedding_dim)
    empty = model.encode([], processor=processor, convert_to="torch")
    assert empty.shape == (0, model.embedding_dim)
    words = np.array(["a dog", "a cat"], dtype=object)  # an array of strings is a list of texts
    np.testing.assert_allclose(model.encode(words, processor=processor),
                               model.encode(["a dog", "a cat"], processor=processor), atol=1e-6, rtol=0)
    out = model.encode(["a dog"], processor=processor, convert_to="torch", device="cpu")
    assert out.device.type == "cpu" and not model.training
    with pytest.raises(ValueError, match="convert_to='list'"):
        model.encode(["a dog"], processor=processor, convert_to="list")


def test_bad_items_name_their_index(tmp_path):
    model, processor = _model(), tiny_processor()
    ok = _image(0)
    cases = [
        ([TEXTS[0], 3], TypeError, (r"inputs\[1\]: expected str, PIL image, path, dict or \(image, text\) "
                                    r"tuple, got int")),
        ([None], TypeError, r"inputs\[0\]: .* got NoneType"),
        ([ok, {"image": ok, "caption": "x"}], ValueError, (r"inputs\[1\]: a dict item takes the keys 'image' "
                                                           r"and/or 'text', got \['caption', 'image'\]")),
        ([{"image": ok, "text": 5}], TypeError, r"inputs\[0\]\['text'\]: expected str, got int"),
        ([(ok,)], ValueError, r"inputs\[0\]: a fused item is an \(image, text\) tuple, got a tuple of 1"),
        ([(3, "a dog")], TypeError, r"inputs\[0\]\[0\]: expected a PIL image, path or array, got int"),
        ([TEXTS[0], ok, str(tmp_path / "missing.jpg")], ImageLoadError,
         r"cannot load image \(inputs\[2\], path '.*missing\.jpg'\): file not found"),
    ]
    for inputs, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            model.encode(inputs, processor=processor)

    class Counting:  # the tiny processor, counting its calls
        def __init__(self):
            self.calls, self.processor = 0, tiny_processor()
            self.tokenizer = self.processor.tokenizer

        def __call__(self, **kwargs):
            self.calls += 1
            return self.processor(**kwargs)

    counting = Counting()
    with pytest.raises(ImageLoadError, match=r"inputs\[40\], path '.*gone\.png'"):  # before any forward
        model.encode([TEXTS[0]] * 40 + [(tmp_path / "gone.png", "a dog")], processor=counting, batch_size=4)
    assert counting.calls == 0
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ImageLoadError, match=r"inputs\[1\], path '.*broken\.png'"):
        model.encode([(ok, "x"), (Path(broken), "y")], processor=processor)


def test_a_literal_special_token_in_a_text_does_not_end_it():
    """A literal ``<|endoftext|>`` in a text used to be read as the end token: CLIP pools there, so what followed
    was dropped and "… red" and "… blue" got one vector."""
    model = GCLModel.from_backbone(tiny_clip()).eval()
    processor = tiny_processor()
    red, blue = model.encode(["a <|endoftext|> red square", "a <|endoftext|> blue square"], processor=processor)
    assert not np.allclose(red, blue, atol=1e-4)
    assert processor.tokenizer.split_special_tokens is False  # the user's tokenizer is left as it was
