"""GCLTrainer writes the GCL model card (not transformers' generic one), with the loss settings actually used."""

import datasets
import numpy as np
from huggingface_hub import ModelCard
from PIL import Image

from gcl_hf import GCLModel, GCLTrainer, GCLTrainingArguments
from gcl_hf.testing import tiny_clip, tiny_processor


def _pairs(n: int = 8) -> datasets.Dataset:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]
    return datasets.Dataset.from_dict({"image": images, "text": [f"caption {i}" for i in range(n)]})


def test_create_model_card_writes_the_gcl_card(tmp_path):
    args = GCLTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=1, report_to=[],
                                use_cpu=True, save_strategy="no", pair_weights="1,1,2,2,1,1", disable_tqdm=True)
    trainer = GCLTrainer(GCLModel.from_backbone(tiny_clip()), args, train_dataset=_pairs(),
                         processing_class=tiny_processor())
    trainer.train()
    trainer.create_model_card(license="mit", dataset_tags="liuhaotian/LLaVA-Pretrain", tags=["demo"])
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "gcl-hf" and card.data.license == "mit" and "demo" in card.data.tags
    assert "liuhaotian/LLaVA-Pretrain" in card.data.datasets
    text = card.text
    assert "the paper's Eq. 2" in text  # the resolved default, not "None"
    assert "1.0, 1.0, 2.0, 2.0, 1.0, 1.0" in text  # the pair weights the loss used
    assert "Trainer" not in card.data.tags or "gcl" in card.data.tags  # not transformers' generic card
