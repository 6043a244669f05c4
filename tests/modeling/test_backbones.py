"""Conformance of every CLIP-like family transformers ships: each trains, encodes and exports, or is refused
before any compute with one line that says why and what to use instead.

Each case is a tiny random backbone of the family with its real processor class (tests/modeling/
backbone_fixtures.py). The README's "Tested backbones" table is checked against :data:`TESTED` below.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoModel

from gcl_hf import GCLModel
from gcl_hf.data.collator import GCLCollator
from gcl_hf.modeling.backbone import FAMILIES, GENERIC_FAMILY, check_backbone, family_of, split_inputs
from gcl_hf.training.arguments import GCLTrainingArguments
from gcl_hf.training.grad_cache import cached_gradient_step

from .backbone_fixtures import CASES, FamilyCase

TEXTS = ["a red square", "two dogs on the field", "a very long caption of a cat and a dog", "blue circle"]
IDS = [c.name for c in CASES]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _images(n: int = 4) -> list[Image.Image]:
    """Images of different sizes and aspect ratios in one batch (NaFlex keeps them; the others resize)."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (24 + 8 * i, 40 - 4 * i, 3), dtype=np.uint8)) for i in range(n)]


def _records() -> list[dict]:
    return [{"image": image, "text": text} for image, text in zip(_images(), TEXTS)]


def _model(case: FamilyCase) -> GCLModel:
    model = GCLModel.from_backbone(case.make_backbone()).eval()
    model.processor = case.make_processor()
    return model


def _batch(model: GCLModel) -> dict[str, torch.Tensor]:
    return GCLCollator.for_model(model, model.processor)(_records())


def _features(backbone, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The backbone's own features, computed with every input its processor returned."""
    image, text = split_inputs(batch)
    with torch.no_grad():
        return (backbone.get_image_features(**image).pooler_output, backbone.get_text_features(**text).pooler_output)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_embeddings_are_the_backbones_own_features(case):
    model = _model(case)
    family = family_of(model)
    assert family is not GENERIC_FAMILY and family.refusal is None and case.model_type in family.model_types
    batch = _batch(model)
    assert set(batch) <= set(family.image_inputs + family.text_inputs)  # what each tower takes is declared
    assert set(family.image_inputs) <= set(batch)
    with torch.no_grad():
        out = model(**batch, return_loss=True)
    image, text = _features(model.backbone, batch)
    torch.testing.assert_close(out.image_embeds, F.normalize(image, dim=-1))
    torch.testing.assert_close(out.text_embeds, F.normalize(text, dim=-1))
    if model.config.fusion == "backbone":  # a backbone with its own fused encoder (VISTA)
        with torch.no_grad():
            fused = model.backbone.get_fused_features(**batch).pooler_output
        torch.testing.assert_close(out.fused_embeds, F.normalize(fused, dim=-1))
    else:
        torch.testing.assert_close(out.fused_embeds, F.normalize(image + text, dim=-1))
    assert torch.isfinite(out.loss) and model.config.objective == family.objective
    own = dict(model.backbone.named_parameters(recurse=False))  # the temperature parameters the table names
    assert {family.logit_scale, family.logit_bias} - {None} <= set(own)
    if family.logit_scale is not None:
        assert model.log_logit_scale_param is own[family.logit_scale]
    else:
        assert "logit_scale" not in own and model.log_logit_scale_param is model.log_logit_scale
    if family.logit_bias is not None:
        assert model.logit_bias_param is own[family.logit_bias]
    else:
        assert "logit_bias" not in own and model.logit_bias_param is None
    padding = "max_length" if family.text_padding == "max_length" else "longest"
    assert (batch["input_ids"].shape[1] == 64) == (padding == "max_length")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradient_cache_step_equals_the_plain_step(case):
    model = _model(case)
    batch = _batch(model)
    model.zero_grad()
    model(**batch, return_loss=True).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    cached_gradient_step(model, batch, chunk_size=3)
    cached = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert plain.keys() == cached.keys() and len(plain) > 4
    scale = max(g.abs().max().item() for g in plain.values())  # float32 noise grows with the largest gradient
    worst = max(plain, key=lambda n: (cached[n] - plain[n]).abs().max().item())
    assert (cached[worst] - plain[worst]).abs().max().item() <= 1e-6 * scale + 1e-7, (worst, scale)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_lora_with_the_familys_default_targets_adapts_both_towers(case, tmp_path):
    model = _model(case)
    args = GCLTrainingArguments(output_dir=str(tmp_path), lora_r=2, report_to=[], use_cpu=True)
    lora = args.lora_config(model)
    assert sorted(lora.target_modules) == sorted(model.family.lora_target_modules)
    model.apply_lora(lora)
    model(**_batch(model), return_loss=True).loss.backward()
    trained = [n for n, p in model.named_parameters() if "lora_" in n and p.grad is not None and p.grad.any()]
    vision = [n for n in trained if "vision" in n]
    assert vision and len(trained) > len(vision), trained  # adapters in both towers get gradients


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_encode_and_retrieval_evaluation(case, tmp_path):
    import datasets

    from gcl_hf.retrieval.evaluation import evaluate_retrieval
    from gcl_hf.benchmarks import RetrievalTask

    model = _model(case)
    images = _images()
    texts, imgs = model.encode(TEXTS), model.encode(images)
    fused = model.encode(list(zip(images, TEXTS)))
    processor = model.processor
    image_inputs = processor(images=images[:1], return_tensors="pt")
    with torch.no_grad():
        np.testing.assert_allclose(imgs[:1], model.embed(image_inputs, "image").numpy(), atol=1e-5, rtol=0)
        if model.config.fusion == "backbone":  # its own fused encoder (VISTA)
            expected_fused = model.embed(processor(images=images[:1], text=TEXTS[:1], return_tensors="pt"), "fused")
        else:
            expected_fused = F.normalize(model.image_features(**split_inputs(image_inputs)[0]) +
                                         torch.from_numpy(model.encode(TEXTS[:1], normalize=False)), dim=-1)
    np.testing.assert_allclose(fused[:1], expected_fused.numpy(), atol=1e-5, rtol=0)
    assert texts.shape == imgs.shape == fused.shape == (4, model.embedding_dim)

    for i, image in enumerate(images):
        image.save(tmp_path / f"c{i}.png")
    corpus = datasets.Dataset.from_dict({"id": [f"c{i}" for i in range(4)], "text": [None] * 4,
                                         "image": [f"c{i}.png" for i in range(4)], "modality": ["image"] * 4})
    queries = datasets.Dataset.from_dict({"id": [f"q{i}" for i in range(4)], "text": TEXTS, "image": [None] * 4,
                                          "modality": ["text"] * 4})
    task = RetrievalTask("toy", queries, corpus, {f"q{i}": {f"c{i}"} for i in range(4)}, image_root=str(tmp_path))
    metrics = evaluate_retrieval(model, processor, task, k=(1,), show_progress=False)
    expected = float(np.mean((texts @ imgs.T).argmax(axis=1) == np.arange(4)))
    assert metrics["recall@1"] == pytest.approx(expected)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_save_reload_and_backbone_export(case, tmp_path):
    model = _model(case)
    expected = model.encode(TEXTS[:2]), model.encode(_images(2))
    model.save_pretrained(tmp_path / "full")
    for loaded in (GCLModel.from_pretrained(tmp_path / "full"), AutoModel.from_pretrained(tmp_path / "full")):
        assert isinstance(loaded, GCLModel)
        loaded.eval()
        np.testing.assert_allclose(loaded.encode(TEXTS[:2]), expected[0], atol=1e-5, rtol=0)
        np.testing.assert_allclose(loaded.encode(_images(2)), expected[1], atol=1e-5, rtol=0)
    model.save_backbone(tmp_path / "backbone")
    plain = AutoModel.from_pretrained(tmp_path / "backbone").eval()
    assert type(plain) is type(model.backbone)
    batch = _batch(model)
    image, text = _features(plain, batch)
    with torch.no_grad():
        out = model(**batch)
    torch.testing.assert_close(out.image_embeds, F.normalize(image, dim=-1))
    torch.testing.assert_close(out.text_embeds, F.normalize(text, dim=-1))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_sentence_transformers_forms(case, tmp_path):
    from sentence_transformers import SentenceTransformer

    model = _model(case)
    images = _images(2)
    expected = model.encode(TEXTS[:2]), model.encode(images)
    model.save_pretrained(tmp_path / "full")
    model.save_backbone(tmp_path / "backbone")
    st_full = SentenceTransformer(str(tmp_path / "full"), device="cpu")
    for form in ("full", "backbone"):
        st = st_full if form == "full" else SentenceTransformer(str(tmp_path / form), device="cpu")
        np.testing.assert_allclose(st.encode(TEXTS[:2]), expected[0], atol=1e-5, rtol=0, err_msg=form)
        np.testing.assert_allclose(st.encode(images), expected[1], atol=1e-5, rtol=0, err_msg=form)
    items = [{"image": image, "text": text} for image, text in zip(images, TEXTS)]
    np.testing.assert_allclose(st_full.encode(items), model.encode(list(zip(images, TEXTS))), atol=1e-5, rtol=0)
    if model.config.fusion == "backbone":  # VISTA: score fusion of the towers would be silently wrong
        from gcl_hf.integrations.sentence_transformers import encode_fused

        with pytest.raises(ValueError, match="with its own encoder"):
            encode_fused(st, items)


def test_siglip2_naflex_trains_with_lora_through_the_trainer(tmp_path):
    """Images of different sizes in one batch, LoRA on the family's targets; the trained GCL embeddings are
    the (merged) backbone's own features."""
    import datasets

    from gcl_hf.training.trainer import GCLTrainer

    case = next(c for c in CASES if c.name == "siglip2-naflex")
    model = _model(case)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train = datasets.Dataset.from_list(_records() * 2)
    args = GCLTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=2,
                                learning_rate=1e-2, lora_r=2, report_to=[], use_cpu=True, save_strategy="no")
    trainer = GCLTrainer(model, args, train_dataset=train, processing_class=model.processor)
    trainer.train()
    trained = trainer.model.eval()
    assert trained.config.objective == "sigmoid" and trained.config.lora_config is not None
    assert any("lora_B" in n and not torch.equal(p, torch.zeros_like(p)) for n, p in trained.named_parameters())
    assert all(torch.equal(before[n.replace("base_model.model.", "").replace(".base_layer", "")], p)
               for n, p in trained.named_parameters() if "lora_" not in n and "logit" not in n)
    batch = _batch(trained)
    assert batch["pixel_attention_mask"].sum(1).unique().numel() > 1  # the images kept their own sizes
    with torch.no_grad():
        out = trained(**batch)
    image, text = _features(trained.merged_backbone().eval(), batch)
    torch.testing.assert_close(out.image_embeds, F.normalize(image, dim=-1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.text_embeds, F.normalize(text, dim=-1), atol=1e-5, rtol=1e-4)


def test_every_shipped_family_is_in_the_table():
    import transformers

    types = {t for family in FAMILIES for t in family.model_types}
    shipped = {"clip", "siglip", "siglip2", "metaclip_2", "altclip", "chinese_clip", "align", "blip", "blip-2",
               "aimv2", "clipseg", "flava", "groupvit", "owlvit", "owlv2"}
    assert shipped <= types
    for model_type in shipped:
        assert transformers.CONFIG_MAPPING[model_type].model_type == model_type


def _refused_cases():
    import transformers as tf

    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    return [
        ("OwlViTModel", lambda: tf.OwlViTModel(tf.OwlViTConfig(text_config=small, vision_config=small)),
         "open-vocabulary detection"),
        ("Owlv2Model", lambda: tf.Owlv2Model(tf.Owlv2Config(text_config=small, vision_config=small)),
         "open-vocabulary detection"),
        ("FlavaModel", lambda: tf.FlavaModel(tf.FlavaConfig(text_config=small, image_config=small,
                                                             multimodal_config=small)), "per-token"),
    ]


@pytest.mark.parametrize("name,make,why", _refused_cases(), ids=[c[0] for c in _refused_cases()])
def test_refused_families_say_why_before_any_compute(name, make, why):
    backbone = make()
    with pytest.raises(TypeError, match=f"^{name} .*is not supported: .*{why}.*; use ") as error:
        GCLModel.from_backbone(backbone)
    assert "\n" not in str(error.value)
    with pytest.raises(TypeError, match=why):
        check_backbone(backbone)


def test_blip2_is_refused_by_its_config():
    import transformers as tf

    family = family_of(tf.Blip2Config())
    assert family.name == "BLIP-2" and "BlipModel" in family.refusal


def test_align_with_unmatched_projection_sizes_is_refused():
    import transformers as tf

    config = tf.AlignConfig(text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2),
                            vision_config=dict(hidden_dim=48, num_hidden_layers=1), projection_dim=32)
    with pytest.raises(TypeError, match="ALIGN has no image projection"):
        GCLModel.from_backbone(tf.AlignModel(config))


@pytest.mark.parametrize("name", IDS)  # each trains in about a second
def test_cli_train_accepts_a_local_checkpoint_of_the_family(name, tmp_path):
    import json

    from gcl_hf.cli.train import parse_args, run

    case = next(c for c in CASES if c.name == name)
    case.make_backbone().save_pretrained(tmp_path / "ckpt")
    case.make_processor().save_pretrained(tmp_path / "ckpt")
    lines = []
    for i, (image, text) in enumerate(zip(_images(), TEXTS)):
        image.save(tmp_path / f"{i}.png")
        lines.append(json.dumps({"image": f"{i}.png", "text": text}))
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    result = run(*parse_args([
        "--model_name_or_path", str(tmp_path / "ckpt"), "--train_data", str(tmp_path / "train.jsonl"),
        "--image_root", str(tmp_path), "--output_dir", str(tmp_path / "out"), "--per_device_train_batch_size", "4",
        "--max_steps", "1", "--lora_r", "2", "--report_to", "none", "--use_cpu", "--save_strategy", "no",
        "--dataloader_num_workers", "0",
    ]))
    trained = GCLModel.from_pretrained(tmp_path / "out")
    assert case.model_type in family_of(trained).model_types
    assert trained.config.lora_config["target_modules"] and np.isfinite(result["metrics"]["train_loss"])


def test_the_readme_table_matches_the_suite():
    """README "Tested backbones": one row per family of FAMILIES, its suite cases and settings."""
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Tested backbones", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| Family")]
    by_name = {f.name: f for f in FAMILIES}
    names = set()
    cases = {c.name: c for c in CASES}
    seen_cases = set()
    for name, types, listed, objective, padding, lora in rows:
        for part in name.split(" / "):
            names.add(part)
        family = by_name[name.split(" / ")[0]]
        assert types.replace("`", "").split(", ") == list(family.model_types)
        if family.refusal is not None:
            assert listed.startswith("refused: ")
            continue
        named = {c for c in cases if f"`{c}`" in listed}
        assert named and all(cases[c].model_type in family.model_types for c in named), name
        seen_cases |= named
        assert objective == family.objective and lora == f"`{','.join(family.lora_target_modules)}`"
        assert padding == ("longest" if family.text_padding == "longest" else f"max_length {family.text_max_length}")
    assert seen_cases == set(cases)
    assert {f.name for f in FAMILIES} <= names | {"OWL-ViT"}
