"""`check_images` has one vocabulary and one parser, used by the training data and every benchmark loader."""

import pytest

from gcl_hf.data.validation import CHECK_IMAGES, parse_check_images


@pytest.mark.parametrize("value, expected", [
    ("none", "none"), ("exists", "exists"), ("decode", "decode"), ("DECODE", "decode"),
    (False, "none"), (True, "exists"), ("no", "none"), ("open", "decode"), ("false", "none"),
])
def test_every_spelling_means_one_of_three_levels(value, expected):
    assert parse_check_images(value) == expected and expected in CHECK_IMAGES


@pytest.mark.parametrize("value", ["yes-please", 1.5, None, "images"])
def test_an_unknown_value_names_the_vocabulary(value):
    with pytest.raises(ValueError, match=r"check_images=.*expected one of none, exists, decode"):
        parse_check_images(value)


def test_loaders_share_the_parser(tmp_path):
    from gcl_hf.benchmarks import load_benchmark
    from gcl_hf.data import load_image_text_pairs

    for call in (lambda: load_image_text_pairs(tmp_path / "x.jsonl", check_images="sometimes"),
                 lambda: load_benchmark("mmeb", tmp_path, check_images="sometimes")):
        with pytest.raises(ValueError, match="expected one of none, exists, decode"):
            call()
