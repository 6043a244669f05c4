"""The encoding engine: one modality rule, batches of one modality, the list and dataset adapters agreeing row for
row (the dataset's ``"image,text"`` column value is the engine's ``"fused"``)."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from gcl_hf import GCLModel
from gcl_hf.benchmarks.task import ENCODER_MODALITIES
from gcl_hf.modeling.engine import encode_items, infer_modality, plan_batches
from gcl_hf.retrieval.encoding import EncodingError, dataset_modalities, encode_dataset
from gcl_hf.testing import tiny_clip, tiny_processor


def test_infer_modality_is_what_the_item_carries():
    image = Image.new("RGB", (4, 4))
    assert infer_modality(image, "a cat") == "fused"
    assert infer_modality("photo.png", None) == "image"
    assert infer_modality(image, "   ") == "image"  # a blank text is no text
    assert infer_modality(None, "a cat") == "text"
    assert infer_modality("", "a cat") == "text"  # an empty path is no image
    with pytest.raises(ValueError, match="neither a text nor an image"):
        infer_modality(None, "")


def test_plan_batches_groups_rows_by_modality_in_batches():
    plan = plan_batches(["text", "image", "fused", "text", "image", "text"], 2)
    assert [(m, rows.tolist()) for m, rows in plan] == [
        ("image", [1, 4]), ("text", [0, 3]), ("text", [5]), ("fused", [2])]
    with pytest.raises(ValueError, match="batch_size=0"):
        plan_batches(["text"], 0)


def test_dataset_column_is_translated_once_and_unknown_values_name_the_row():
    ds = datasets.Dataset.from_list([{"id": "a", "modality": "image,text"}, {"id": "b", "modality": "text"}])
    assert dataset_modalities(ds) == ["fused", "text"]
    bad = datasets.Dataset.from_list([{"id": "a", "modality": "text"}, {"id": "b", "modality": "fused"}])
    with pytest.raises(EncodingError, match=r"row 1 \(id 'b'\), field 'modality': unknown modality 'fused'"):
        dataset_modalities(bad)  # the column speaks the public vocabulary; "fused" is the engine's word


def test_list_and_dataset_adapters_give_the_same_rows(tmp_path):
    model, processor = GCLModel.from_backbone(tiny_clip(seed=0)).eval(), tiny_processor()
    rng = np.random.default_rng(0)
    rows, items = [], []
    for i in range(7):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(path)
        text = f"item {i} " + "word " * i
        modality = ("image", "text", "image,text")[i % 3]
        rows.append({"id": str(i), "text": text if "text" in modality else None,
                     "image": path.name if "image" in modality else None, "modality": modality})
        items.append({"image": path, "text": text} if modality == "image,text" else
                     {"image": path} if modality == "image" else text)
    dataset = encode_dataset(model, processor, datasets.Dataset.from_list(rows), image_root=str(tmp_path),
                             batch_size=2, show_progress=False)
    listed = model.encode(items, processor=processor, batch_size=3, convert_to="torch")
    engine = encode_items(model, processor, [(ENCODER_MODALITIES[r["modality"]], r["image"], r["text"]) for r in rows],
                          image_root=str(tmp_path), batch_size=5)
    torch.testing.assert_close(listed, dataset, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(engine, dataset, rtol=1e-5, atol=1e-5)
    assert torch.allclose(dataset.norm(dim=-1), torch.ones(7), atol=1e-5)
