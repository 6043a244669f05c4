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


def test_encode_of_fused_items_uses_the_backbones_own_fused_encoder(tiny_processor):
    """`GCLModel.encode` of (image, text) items used to fuse the towers (and raise) for fusion="backbone"."""
    from PIL import Image

    backbone = _fusing_backbone().eval()
    model = GCLModel.from_backbone(backbone).eval()
    images = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    got = model.encode([(images[0], "a red square"), (images[1], "blue")], processor=tiny_processor,
                       convert_to="torch")
    batch = tiny_processor(images=images, text=["a red square", "blue"], padding=True, return_tensors="pt")
    with torch.no_grad():
        for n in range(2):
            one = tiny_processor(images=[images[n]], text=[["a red square", "blue"][n]], return_tensors="pt")
            expected = F.normalize(backbone.get_fused_features(one["pixel_values"], one["input_ids"],
                                                               one["attention_mask"]), dim=-1)
            torch.testing.assert_close(got[n:n + 1], expected, atol=1e-5, rtol=0)
    assert batch["pixel_values"].shape[0] == 2


class AllAtOnceCLIP(FusingCLIP):
    """A fused-encoder backbone that also offers the one-call hook: counts vision-tower runs."""

    vision_calls = 0

    def get_image_features(self, pixel_values, **kwargs):
        type(self).vision_calls += 1
        return super().get_image_features(pixel_values=pixel_values, **kwargs)

    def get_image_text_fused_features(self, pixel_values, input_ids, attention_mask=None):
        image = self.get_image_features(pixel_values=pixel_values).pooler_output
        text = self.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return image, text, 2.0 * image - text


def test_forward_asks_a_backbone_with_the_one_call_hook_once():
    plain = tiny_clip()
    backbone = AllAtOnceCLIP(plain.config)
    backbone.load_state_dict(plain.state_dict())
    model = GCLModel.from_backbone(backbone.eval()).eval()
    g = torch.Generator().manual_seed(0)
    px, ids = torch.randn(3, 3, 32, 32, generator=g), torch.randint(0, 256, (3, 6), generator=g)
    AllAtOnceCLIP.vision_calls = 0
    with torch.no_grad():
        out = model(pixel_values=px, input_ids=ids, return_loss=True)
        expected = F.normalize(FusingCLIP.get_fused_features(backbone, px, ids), dim=-1)
    assert AllAtOnceCLIP.vision_calls == 1 + 1  # forward once, the reference once
    torch.testing.assert_close(out.fused_embeds, expected)


def _tiny_siglip2():
    from transformers import Siglip2Config, Siglip2Model

    torch.manual_seed(0)
    config = Siglip2Config(
        text_config={"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "num_channels": 3, "patch_size": 8, "num_patches": 16},
    )
    return Siglip2Model(config).eval()


def test_siglip2_naflex_vision_inputs_reach_the_image_tower():
    """SigLIP 2's processor returns pixel_attention_mask and spatial_shapes beside pixel_values; they used to be
    handed to the text tower (TypeError inside transformers) or dropped."""
    from PIL import Image
    from transformers import Siglip2ImageProcessor

    backbone = _tiny_siglip2()
    model = GCLModel.from_backbone(backbone).eval()
    images = [Image.new("RGB", (40, 24), "red"), Image.new("RGB", (16, 48), "blue")]  # two aspect ratios
    vision = Siglip2ImageProcessor(patch_size=8, max_num_patches=16)(images=images, return_tensors="pt")
    assert {"pixel_attention_mask", "spatial_shapes"} <= set(vision)
    ids = torch.randint(1, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(**vision, input_ids=ids, return_loss=True)
        expected = F.normalize(backbone.get_image_features(**vision).pooler_output, dim=-1)
        encoded = model.encode_image(**vision)
        fused = model.encode_fused(**vision, input_ids=ids)
    torch.testing.assert_close(out.image_embeds, expected)
    torch.testing.assert_close(encoded, expected)
    torch.testing.assert_close(fused, out.fused_embeds)
    assert torch.isfinite(out.loss)


def test_an_input_that_belongs_to_no_tower_is_named():
    import pytest

    model = GCLModel.from_backbone(tiny_clip())
    with pytest.raises(TypeError, match="unexpected model inputs \\['pixel_typo'\\]"):
        model(input_ids=torch.ones(2, 4, dtype=torch.long), pixel_typo=torch.ones(2))
