"""`encode_dataset` on texts the tokenizer alone cannot bound, and SigLIP texts that must not depend on their batch."""

from __future__ import annotations

import datasets
import pytest
import torch

from gcl_hf import GCLModel
from gcl_hf.retrieval.encoding import encode_dataset
from gcl_hf.testing import byte_level_tokenizer, tiny_clip, tiny_processor, tiny_siglip

LONG = "a caption that goes on " * 20


def _texts(*texts: str) -> datasets.Dataset:
    return datasets.Dataset.from_list(
        [{"id": f"t{i}", "text": text, "image": None, "modality": "text"} for i, text in enumerate(texts)])


@pytest.fixture(scope="module")
def clip():
    return GCLModel.from_backbone(tiny_clip(seed=0, max_length=16)).eval()


def test_long_text_with_an_unbounded_tokenizer_is_truncated_to_the_text_tower(clip):
    processor = tiny_processor()
    processor.tokenizer.model_max_length = int(1e30)  # what transformers sets when a tokenizer declares none
    got = encode_dataset(clip, processor, _texts("short", LONG), show_progress=False)
    inputs = processor.tokenizer([LONG], truncation=True, max_length=16, return_tensors="pt")
    with torch.inference_mode():
        expected = clip.encode_text(inputs["input_ids"], inputs["attention_mask"])
    torch.testing.assert_close(got[1:], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="max_length 40 is more than the text tower's 16 positions"):
        encode_dataset(clip, processor, _texts(LONG), processor_kwargs={"max_length": 40}, show_progress=False)


def test_siglip_text_embedding_does_not_depend_on_its_batch():
    from transformers import SiglipProcessor

    try:
        from transformers import SiglipImageProcessorPil as ImageProcessor
    except ImportError:  # pragma: no cover - older transformers
        from transformers import SiglipImageProcessor as ImageProcessor
    model = GCLModel.from_backbone(tiny_siglip(max_length=24)).eval()
    processor = SiglipProcessor(image_processor=ImageProcessor(size={"height": 32, "width": 32}),
                                tokenizer=byte_level_tokenizer(24))
    dataset = _texts("ab", "a much longer text than the first")
    together = encode_dataset(model, processor, dataset, batch_size=2, show_progress=False)
    alone = encode_dataset(model, processor, dataset, batch_size=1, show_progress=False)
    # SigLIP pools the last position: it was trained with max_length padding, so texts are padded that way
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
