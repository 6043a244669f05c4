"""VistaImageProcessor: the reference's resize / centre-crop rounding / RGB order / normalisation, and loading."""

import numpy as np
import pytest
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor

import gcl_hf  # noqa: F401 - registers VISTA
from gcl_hf.modeling.vista import VistaConfig, VistaImageProcessor, VistaProcessor
from gcl_hf.modeling.vista.image_processing_vista import center_crop_box, resized_size
from gcl_hf.modeling.vista.testing import tiny_vista_processor

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


@pytest.mark.parametrize(("height", "top"), [(225, 0), (227, 2), (229, 2), (231, 4), (233, 4), (236, 6)])
def test_crop_offset_rounds_half_to_even(height, top):
    # (height - 224) / 2 = 0.5 → 0, 1.5 → 2, 2.5 → 2, 3.5 → 4, 4.5 → 4: not floor division
    assert center_crop_box(224, height, 224) == (0, top, 224, top + 224)


def test_resize_truncates_the_long_side():
    assert resized_size(300, 451, 224) == (224, 336)  # 336.7 → 336
    assert resized_size(500, 375, 224) == (298, 224)  # 298.67 → 298
    assert resized_size(224, 224, 224) == (224, 224)


def _normalised(array):
    return ((array.astype(np.float32) / np.float32(255) - MEAN) / STD).transpose(2, 0, 1)


def test_crop_where_rounding_differs_from_floor():
    rng = np.random.RandomState(0)
    array = (rng.rand(35, 32, 3) * 255).astype("uint8")  # 3 extra rows: the crop starts at row 2
    out = VistaImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})(
        Image.fromarray(array), return_tensors="np")["pixel_values"][0]
    np.testing.assert_array_equal(out, _normalised(array[2:34]))
    assert not np.array_equal(out, _normalised(array[1:33]))


def test_resize_happens_before_rgb_conversion():
    rng = np.random.RandomState(1)
    gray = Image.fromarray((rng.rand(40, 50) * 255).astype("uint8"), mode="L")
    proc = VistaImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    got = proc(gray, return_tensors="np")["pixel_values"][0]
    resized = gray.resize((40, 32), Image.Resampling.BICUBIC).crop(center_crop_box(40, 32, 32)).convert("RGB")
    np.testing.assert_array_equal(got, _normalised(np.asarray(resized)))


def test_arrays_and_images_give_the_same_pixels():
    rng = np.random.RandomState(2)
    array = (rng.rand(37, 41, 3) * 255).astype("uint8")
    proc = tiny_vista_processor().image_processor
    a = proc([array], return_tensors="np")["pixel_values"]
    b = proc([Image.fromarray(array)], return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(a, b)
    assert a.shape == (1, 3, 32, 32) and a.dtype == np.float32


def test_auto_processor_round_trip(tmp_path):
    processor = tiny_vista_processor()
    processor.save_pretrained(tmp_path)
    VistaConfig(vision_config={"image_size": 32, "patch_size": 8}).save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is VistaProcessor and type(loaded.image_processor) is VistaImageProcessor
    assert type(AutoImageProcessor.from_pretrained(tmp_path)) is VistaImageProcessor
    assert loaded.image_processor.crop_size["height"] == 32
    assert loaded.tokenizer("")["input_ids"] == processor.tokenizer("")["input_ids"]
