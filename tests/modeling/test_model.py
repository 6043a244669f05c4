"""GCLModel: wrapping changes nothing, fusion definitions, round trips, LoRA, errors."""

import copy

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig
from transformers import AutoConfig, AutoModel, CLIPModel, SiglipModel

import gcl_hf
from gcl_hf import GCLConfig, GCLModel
from gcl_hf.modeling.fusion import FusionMLP
from gcl_hf.testing import tiny_clip, tiny_siglip


def _batch(n=3, length=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (n, length), generator=g)
    ids[:, -1] = 257  # end token: CLIP's pooler reads the eos position
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0
    ids[0, -3:] = 258
    ids[0, -4] = 257
    return torch.randn(n, 3, 32, 32, generator=g), ids, mask


def _raw(backbone, px, ids, mask):
    with torch.no_grad():
        img = backbone.get_image_features(pixel_values=px).pooler_output
        txt = backbone.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
    return img, txt


@pytest.mark.parametrize("make", [tiny_clip, tiny_siglip])
def test_wrapping_changes_no_output(make):
    backbone = make()
    px, ids, mask = _batch()
    img, txt = _raw(make(), px, ids, mask)  # an independent copy: wrapping must not touch settings
    model = GCLModel.from_backbone(backbone).eval()
    with torch.no_grad():
        assert torch.equal(model.encode_image(px), F.normalize(img, dim=-1))
        assert torch.equal(model.encode_text(ids, mask), F.normalize(txt, dim=-1))
    assert model.config.backbone_config is not backbone.config
    assert backbone.config._attn_implementation == make().config._attn_implementation


@pytest.mark.parametrize("fusion", ["sum", "mean", "mlp"])
def test_fusion_definitions_and_normalisation(fusion):
    model = GCLModel.from_backbone(tiny_clip(), fusion=fusion).eval()
    px, ids, mask = _batch()
    img, txt = _raw(model.backbone, px, ids, mask)
    with torch.no_grad():
        fused = model.encode_fused(px, ids, mask)
        out = model(pixel_values=px, input_ids=ids, attention_mask=mask)
    expected = {
        "sum": F.normalize(img + txt, dim=-1),
        "mlp": F.normalize(img + txt, dim=-1),  # a fresh head is exactly "sum"
        "mean": F.normalize(F.normalize(img, dim=-1) + F.normalize(txt, dim=-1), dim=-1),
    }[fusion]
    torch.testing.assert_close(fused, expected, rtol=0, atol=1e-6)
    for emb in (fused, out.image_embeds, out.text_embeds, out.fused_embeds):
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(out.fused_embeds, fused)


def test_mlp_head_learns_away_from_sum():
    head = FusionMLP(8)
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    assert torch.equal(head(a, b), a + b)
    (head(a, b) ** 2).sum().backward()
    assert head.fc2.weight.grad.abs().sum() > 0  # zero-initialised, yet trainable


def test_forward_loss_and_pair_losses():
    model = GCLModel.from_backbone(tiny_clip())
    px, ids, mask = _batch(4)
    out = model(pixel_values=px, input_ids=ids, attention_mask=mask, return_loss=True)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert set(out.pair_losses) == {f"{a}->{b}" for a, b in model.config.pair_tuples}
    out.loss.backward()
    assert model.backbone.logit_scale.grad is not None
    assert model.backbone.text_model.embeddings.token_embedding.weight.grad.abs().sum() > 0


def test_clip_pairs_forward_equals_clip_loss():
    backbone = tiny_clip()
    px, ids, mask = _batch(4)
    with torch.no_grad():
        ref = copy.deepcopy(backbone)(pixel_values=px, input_ids=ids, attention_mask=mask, return_loss=True).loss
        ours = GCLModel.from_backbone(backbone, pairs=[["image", "text"], ["text", "image"]])(
            pixel_values=px, input_ids=ids, attention_mask=mask, return_loss=True
        ).loss
    torch.testing.assert_close(ours, ref)


@pytest.mark.parametrize("fusion", ["sum", "mlp"])
def test_save_load_and_auto_round_trip(tmp_path, fusion):
    model = GCLModel.from_backbone(tiny_clip(), fusion=fusion, negatives="all").eval()
    if model.fusion_head is not None:
        torch.nn.init.normal_(model.fusion_head.fc2.weight)  # a trained head must survive the round trip
    px, ids, mask = _batch()
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "gcl"
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, GCLModel)
    assert loaded.config.negatives == "all" and loaded.config.fusion == fusion
    with torch.no_grad():
        for name in ("encode_image", "encode_text", "encode_fused"):
            args = {"encode_image": (px,), "encode_text": (ids, mask), "encode_fused": (px, ids, mask)}[name]
            assert torch.equal(getattr(loaded, name)(*args), getattr(model, name)(*args)), name


def test_siglip_sigmoid_model_uses_backbone_bias():
    model = GCLModel.from_backbone(tiny_siglip(), objective="sigmoid")
    assert model.logit_bias_param is model.backbone.logit_bias
    px, ids, mask = _batch(4)
    out = model(pixel_values=px, input_ids=ids, attention_mask=mask, return_loss=True)
    out.loss.backward()
    assert model.backbone.logit_bias.grad is not None


def test_own_temperature_when_backbone_has_none(tmp_path):
    model = GCLModel.from_backbone(tiny_clip())
    assert not hasattr(model, "log_logit_scale")
    torch.testing.assert_close(model.logit_scale(), model.backbone.logit_scale.exp().reshape(()))


def test_save_backbone_reloads_as_its_own_class(tmp_path):
    model = GCLModel.from_backbone(tiny_clip()).eval()
    px, ids, mask = _batch()
    model.save_backbone(tmp_path)
    plain = CLIPModel.from_pretrained(tmp_path).eval()
    img, txt = _raw(plain, px, ids, mask)
    with torch.no_grad():
        assert torch.equal(F.normalize(img + txt, dim=-1), model.encode_fused(px, ids, mask))


def test_lora_round_trip_merge_and_backbone(tmp_path):
    model = GCLModel.from_backbone(tiny_clip())
    model.apply_lora(
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
        train_logit_scale=False,
    )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    model.eval()
    px, ids, mask = _batch()
    with torch.no_grad():
        before = model.encode_fused(px, ids, mask)
    model.save_pretrained(tmp_path / "gcl")
    reloaded = GCLModel.from_pretrained(tmp_path / "gcl").eval()
    model.save_backbone(tmp_path / "merged")
    plain = GCLModel.from_backbone(CLIPModel.from_pretrained(tmp_path / "merged")).eval()
    with torch.no_grad():
        assert torch.equal(reloaded.encode_fused(px, ids, mask), before)
        torch.testing.assert_close(plain.encode_fused(px, ids, mask), before, rtol=0, atol=1e-5)
    model.merge_lora()
    assert isinstance(model.backbone, CLIPModel) and model.config.lora_config is None


def test_apply_lora_keeps_temperature_trainable_by_default():
    model = GCLModel.from_backbone(tiny_clip())
    model.apply_lora(LoraConfig(r=2, target_modules=["q_proj"]))
    assert model.log_logit_scale_param.requires_grad


def test_backbone_without_feature_methods_is_refused():
    with pytest.raises(TypeError, match="get_image_features"):
        GCLModel.from_backbone(torch.nn.Linear(2, 2))


def test_bad_config_values_name_the_field():
    with pytest.raises(ValueError, match="fusion"):
        GCLConfig(fusion="concat")
    with pytest.raises(ValueError, match="pairs"):
        GCLConfig(pairs=[["image", "audio"]])
    with pytest.raises(ValueError, match="pair_weights"):
        GCLConfig(pair_weights=[1.0])


def test_mismatched_fused_batch_is_refused():
    model = GCLModel.from_backbone(tiny_clip())
    px, ids, mask = _batch(3)
    with pytest.raises(ValueError, match="one image per text"):
        model.encode_fused(px[:2], ids, mask)
    with pytest.raises(ValueError, match="needs pixel_values"):
        model()


def test_import_registers_auto_classes():
    assert AutoConfig.for_model("gcl").__class__ is gcl_hf.GCLConfig
    assert isinstance(AutoModel.from_config(GCLConfig(backbone_config=tiny_clip().config.to_dict())), GCLModel)


def test_siglip_round_trip(tmp_path):
    model = GCLModel.from_backbone(tiny_siglip(), objective="sigmoid", fusion="mean").eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded.backbone, SiglipModel)
    px, ids, mask = _batch()
    with torch.no_grad():
        assert torch.equal(loaded.encode_fused(px, ids, mask), model.encode_fused(px, ids, mask))


def _tiny_chinese_clip():
    from transformers import ChineseCLIPConfig, ChineseCLIPModel

    text = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=64)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=32, patch_size=8)
    torch.manual_seed(0)
    return ChineseCLIPModel(ChineseCLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()


def _tiny_altclip():
    from transformers import AltCLIPConfig, AltCLIPModel

    text = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=64, project_dim=16, pad_token_id=1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=32, patch_size=8)
    torch.manual_seed(0)
    return AltCLIPModel(AltCLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()


@pytest.mark.parametrize("make", [_tiny_chinese_clip, _tiny_altclip])
def test_other_clip_like_architectures(make, tmp_path):
    model = GCLModel.from_backbone(make(), fusion="mlp").eval()
    ids, px = torch.randint(3, 300, (2, 6)), torch.randn(2, 3, 32, 32)
    out = model(pixel_values=px, input_ids=ids, return_loss=True)
    assert torch.isfinite(out.loss) and out.fused_embeds.shape == (2, 16)
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(loaded.encode_fused(px, ids), model.encode_fused(px, ids))
