"""What a backbone implies is decided in GCLModel.from_backbone, so the library, trainer and CLI agree."""

import torch
import torch.nn.functional as F

from gcl_hf import GCLModel, GCLTrainer, GCLTrainingArguments
from gcl_hf.testing import tiny_clip, tiny_siglip
from transformers import CLIPModel


def test_siglip_backbone_trains_with_its_sigmoid_objective():
    model = GCLModel.from_backbone(tiny_siglip())
    assert model.config.objective == "sigmoid" and model.config.loss_settings.negatives == "modality"
    assert GCLModel.from_backbone(tiny_siglip(), objective="softmax").config.objective == "softmax"  # explicit wins
    assert GCLModel.from_backbone(tiny_clip()).config.objective == "softmax"


def test_trainer_on_a_siglip_backbone_uses_sigmoid(tmp_path):
    args = GCLTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    trainer = GCLTrainer(tiny_siglip(), args, data_collator=lambda records: records)
    assert trainer.model.config.objective == "sigmoid"


class FusingCLIP(CLIPModel):
    """A backbone with its own fused encoder (a stand-in for one that feeds image tokens into its text tower)."""

    def get_fused_features(self, pixel_values, input_ids, attention_mask=None):
        image = self.get_image_features(pixel_values=pixel_values).pooler_output
        text = self.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return 2.0 * image - text


def _fusing_backbone() -> FusingCLIP:
    plain = tiny_clip()
    model = FusingCLIP(plain.config)
    model.load_state_dict(plain.state_dict())
    return model


def test_model_asks_the_backbone_for_fused_embeddings_first():
    backbone = _fusing_backbone().eval()
    model = GCLModel.from_backbone(backbone).eval()
    assert model.config.fusion == "backbone"
    g = torch.Generator().manual_seed(0)
    px = torch.randn(3, 3, 32, 32, generator=g)
    ids = torch.randint(0, 256, (3, 6), generator=g)
    ids[:, -1] = 257
    with torch.no_grad():
        expected = F.normalize(backbone.get_fused_features(px, ids), dim=-1)
        assert torch.equal(model.encode_fused(px, ids), expected)
        out = model(pixel_values=px, input_ids=ids, return_loss=True)
    assert torch.equal(out.fused_embeds, expected) and torch.isfinite(out.loss)
    assert GCLModel.from_backbone(_fusing_backbone(), fusion="sum").config.fusion == "sum"  # explicit wins
