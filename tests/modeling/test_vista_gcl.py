"""GCLModel on a VISTA backbone: fusion, temperature, one ViT pass per image, loss, freezing, LoRA, save/load."""

import math

import pytest
import torch
from peft import LoraConfig

import gcl_hf  # noqa: F401 - registers VISTA
from gcl_hf import GCLModel
from gcl_hf.modeling.towers import freeze_towers
from gcl_hf.modeling.vista import VISTA_LORA_TARGETS, VistaModel
from gcl_hf.modeling.vista.testing import tiny_vista, tiny_vista_processor


@pytest.fixture
def processor():
    return tiny_vista_processor()


@pytest.fixture
def batch(processor):
    g = torch.Generator().manual_seed(0)
    text = processor.tokenizer(["a cat", "a dog on a mat", "two cars"], padding=True, return_tensors="pt")
    return {"pixel_values": torch.randn(3, 3, 32, 32, generator=g), **text}


def _vit_calls(model):
    calls = []
    model._unwrapped_backbone().vision_model.register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_from_backbone_picks_backbone_fusion_and_vista_temperature():
    model = GCLModel.from_backbone(tiny_vista())
    assert model.config.fusion == "backbone"
    assert model.logit_scale().item() == pytest.approx(50.0)
    assert GCLModel.from_backbone(tiny_vista(), logit_scale_init=math.log(20)).logit_scale().item() == pytest.approx(20)


def test_forward_runs_the_vit_once_and_matches_the_backbone(batch):
    backbone = tiny_vista()
    model = GCLModel.from_backbone(backbone).eval()
    calls = _vit_calls(model)
    with torch.no_grad():
        out = model(**batch, return_loss=True)
    assert len(calls) == 1
    assert torch.isfinite(out.loss) and set(out.pair_losses) == {f"{a}->{b}" for a, b in model.config.pair_tuples}
    with torch.no_grad():
        fused = backbone.get_fused_features(batch["pixel_values"], batch["input_ids"], batch["attention_mask"]).pooler_output
        image = backbone.get_image_features(batch["pixel_values"]).pooler_output
    torch.testing.assert_close(out.fused_embeds, torch.nn.functional.normalize(fused, dim=-1))
    torch.testing.assert_close(out.image_embeds, torch.nn.functional.normalize(image, dim=-1))


def test_loss_trains_both_towers(batch):
    model = GCLModel.from_backbone(tiny_vista()).train()
    model(**batch, return_loss=True).loss.backward()
    backbone = model.backbone
    assert backbone.vision_model.layers[0].attn.q_proj.weight.grad.abs().sum() > 0
    assert backbone.visual_projection.weight.grad.abs().sum() > 0
    assert backbone.text_model.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_freeze_text_is_vistas_recipe(batch):
    model = GCLModel.from_backbone(tiny_vista())
    assert freeze_towers(model, text=True) == ["text_model"]
    trainable = {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")}
    assert trainable == {"vision_model", "visual_projection"}
    model.train()
    model(**batch, return_loss=True).loss.backward()
    assert model.backbone.visual_projection.weight.grad is not None
    assert model.backbone.text_model.embeddings.position_embeddings.weight.grad is None


def test_lora_reaches_both_towers_and_round_trips(batch, tmp_path, processor):
    model = GCLModel.from_backbone(tiny_vista())
    model.apply_lora(LoraConfig(r=2, lora_alpha=4, target_modules=list(VISTA_LORA_TARGETS)))
    names = [n for n, _ in model.named_parameters() if "lora_A" in n]
    assert any(".vision_model." in n and "q_proj" in n for n in names)
    assert any(".text_model." in n and ".query." in n for n in names)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    model.eval()
    model.processor = processor
    with torch.no_grad():
        before = model(**batch)
    model.save_pretrained(tmp_path / "full")
    loaded = GCLModel.from_pretrained(tmp_path / "full").eval()
    with torch.no_grad():
        after = loaded(**batch)
    for key in ("image_embeds", "text_embeds", "fused_embeds"):
        torch.testing.assert_close(after[key], before[key], rtol=1e-5, atol=1e-6)


def test_save_backbone_gives_a_vista_directory(batch, tmp_path, processor):
    model = GCLModel.from_backbone(tiny_vista()).eval()
    model.processor = processor
    model.save_backbone(tmp_path / "backbone")
    again = GCLModel.from_backbone(tmp_path / "backbone").eval()
    assert type(again.backbone) is VistaModel and again.config.fusion == "backbone"
    with torch.no_grad():
        a, b = model(**batch), again(**batch)
    torch.testing.assert_close(a.fused_embeds, b.fused_embeds, rtol=0, atol=0)


def test_encode_mixes_the_three_modalities(processor):
    from PIL import Image

    model = GCLModel.from_backbone(tiny_vista()).eval()
    model.processor = processor
    image = Image.new("RGB", (40, 36), (10, 200, 30))
    out = model.encode(["a green square", image, {"image": image, "text": "a green square"}])
    assert out.shape == (3, 32)
    with torch.no_grad():
        pix = processor.image_processor([image], return_tensors="pt")["pixel_values"]
        expected = model.encode_image(pix)[0].numpy()
    assert abs(out[1] - expected).max() < 1e-5


def test_gradient_cache_gives_the_one_pass_gradient(batch):
    from gcl_hf.training.grad_cache import cached_gradient_step

    model = GCLModel.from_backbone(tiny_vista()).train()
    model.zero_grad()
    out = model(**batch, return_loss=True)
    out.loss.backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    cached = cached_gradient_step(model, batch, 2)
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == reference.keys() and "log_logit_scale" in reference
    scale = max(g.abs().max().item() for g in reference.values())
    assert max((got[n] - reference[n]).abs().max().item() for n in reference) <= 1e-5 * scale
    torch.testing.assert_close(cached.loss, out.loss.detach(), rtol=1e-6, atol=1e-6)


def test_trainer_step_with_patch_dropout_and_gradient_cache(tmp_path, processor):
    from datasets import Dataset
    from PIL import Image

    from gcl_hf import GCLCollator, GCLTrainer, GCLTrainingArguments

    backbone = tiny_vista()
    backbone.config.vision_config.patch_dropout = 0.5
    model = GCLModel.from_backbone(backbone)
    rows = [{"image": Image.new("RGB", (36, 32), (40 * i, 20, 200 - 30 * i)), "text": f"colour {i}"}
            for i in range(4)]
    args = GCLTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=1,
                                gradient_cache_chunk_size=2, freeze_text=True, report_to=[], use_cpu=True,
                                save_strategy="no", learning_rate=1e-3)
    trainer = GCLTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=processor,
                         data_collator=GCLCollator.for_model(model, processor))
    before = model.backbone.visual_projection.weight.detach().clone()
    text_before = model.backbone.text_model.embeddings.word_embeddings.weight.detach().clone()
    trainer.train()
    assert not torch.equal(model.backbone.visual_projection.weight, before)
    assert torch.equal(model.backbone.text_model.embeddings.word_embeddings.weight, text_before)
