"""gcl_hf.data.images.open_image on every image mode and broken file a user may hand it, against numpy references."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image, ImageOps

from gcl_hf.data.images import ImageLoadError, open_image

RAMP16 = np.linspace(0, 65535, 48).round().astype(np.uint16).reshape(6, 8)


def _encoded(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _gray(array: np.ndarray) -> np.ndarray:
    """The reference: one 8-bit channel repeated three times."""
    return np.repeat(array[..., None], 3, axis=2)


def _pixels(source) -> np.ndarray:
    image = open_image(source)
    assert image.mode == "RGB"
    return np.asarray(image)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grayscale_scales_to_8_bits(fmt):
    data = _encoded(Image.fromarray(RAMP16), fmt)
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    np.testing.assert_array_equal(_pixels(data), _gray(np.round(RAMP16 / 257).astype(np.uint8)))


def test_32_bit_integer_image_infers_its_depth():
    # 16-bit values stored in a 32-bit "I" image (as older Pillow decoded 16-bit PNGs, and 16-bit PGMs still are)
    data = _encoded(Image.fromarray(RAMP16.astype(np.int32)), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I"
    np.testing.assert_array_equal(_pixels(data), _gray(np.round(RAMP16 / 257).astype(np.uint8)))
    eight = (RAMP16 // 257).astype(np.int32)  # 8-bit values in an "I" image stay as they are
    np.testing.assert_array_equal(_pixels(Image.fromarray(eight)), _gray(eight.astype(np.uint8)))
    with pytest.raises(ImageLoadError, match="negative"):
        open_image(Image.fromarray(np.full((2, 2), -5, np.int32)))


def test_float_image_in_unit_range_scales_to_8_bits():
    values = (RAMP16 / 65535).astype(np.float32)
    data = _encoded(Image.fromarray(values), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    np.testing.assert_array_equal(_pixels(data), _gray(np.round(values * 255).astype(np.uint8)))
    with pytest.raises(ImageLoadError, match=r"expected \[0, 1\] or \[0, 255\]"):
        open_image(Image.fromarray(np.full((2, 2), 1000.0, np.float32)))


def test_uint16_array_is_a_16_bit_image_like_its_png():
    np.testing.assert_array_equal(_pixels(RAMP16), _pixels(_encoded(Image.fromarray(RAMP16))))


@pytest.mark.parametrize("mode,fill", [("LA", (100, 0)), ("PA", (1, 0)), ("RGBA", (10, 20, 30, 0))])
def test_transparent_pixels_become_white(mode, fill):
    image = Image.new(mode, (4, 3), fill)
    if mode == "PA":
        image.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    np.testing.assert_array_equal(_pixels(image), np.full((3, 4, 3), 255, np.uint8))


def test_palette_with_transparent_index_and_grayscale_with_trns():
    palette = Image.new("P", (4, 3), 1)
    palette.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    palette.putpixel((0, 0), 0)
    pixels = _pixels(_encoded(palette, transparency=0))
    assert tuple(pixels[0, 0]) == (255, 255, 255) and tuple(pixels[1, 1]) == (200, 0, 0)
    gray = Image.new("L", (4, 3), 7)  # a PNG tRNS chunk: gray value 7 is transparent
    assert tuple(_pixels(_encoded(gray, transparency=7))[0, 0]) == (255, 255, 255)


def test_cmyk_and_one_bit_and_palette():
    red = _pixels(_encoded(Image.new("CMYK", (4, 3), (0, 255, 255, 0)), "TIFF"))
    np.testing.assert_array_equal(red, np.broadcast_to(np.array([255, 0, 0], np.uint8), (3, 4, 3)))
    bits = Image.new("1", (4, 3), 0)
    bits.putpixel((1, 1), 1)
    np.testing.assert_array_equal(_pixels(_encoded(bits))[..., 0], np.where(np.arange(12).reshape(3, 4) == 5, 255, 0))


def test_exif_orientation_is_applied_as_transformers_and_datasets_do():
    image = Image.new("RGB", (8, 4), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 2, 4))  # a blue left edge
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = _encoded(image, "PNG", exif=exif.tobytes())
    reference = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    got = open_image(data)
    assert got.size == (4, 8) == reference.size
    np.testing.assert_array_equal(np.asarray(got), np.asarray(reference))


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (8, 6), color) for color in [(255, 0, 0), (0, 255, 0)]]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    assert tuple(_pixels(buffer.getvalue())[0, 0]) == (255, 0, 0)


def test_zero_byte_file_and_nul_in_path(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageLoadError, match=r"empty\.png'\): empty file \(0 bytes\)"):
        open_image(str(empty))
    with pytest.raises(ImageLoadError, match="NUL"):
        open_image("a\x00b.png")


def test_truncated_file_is_an_error():
    data = _encoded(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)))
    with pytest.raises(ImageLoadError, match="truncated"):
        open_image(data[: len(data) // 2])


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_is_refused_before_decoding(monkeypatch):
    data = _encoded(Image.new("1", (300, 200)))  # 60k pixels in a few hundred bytes
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)  # Pillow only warns between 1x and 2x this limit
    for action in ("ignore", "error"):  # refused from the header, whatever the warning filters say
        with warnings.catch_warnings():
            warnings.simplefilter(action)
            with pytest.raises(ImageLoadError, match=r"decompression bomb.*MAX_IMAGE_PIXELS"):
                open_image(data)
    with pytest.raises(ImageLoadError, match=r"300x200 = 60,000 pixels"):
        open_image(data)
    with pytest.raises(ImageLoadError, match=r"decompression bomb.*MAX_IMAGE_PIXELS"):
        open_image(_encoded(Image.new("1", (400, 300))))  # over 2x: Pillow's own error, same hint
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # the user's explicit opt-out is respected
    assert open_image(data).size == (300, 200)


def test_url_is_not_fetched_and_says_so():
    with pytest.raises(ImageLoadError, match=r"file not found \(URLs are not downloaded"):
        open_image("https://example.com/cat.jpg")
