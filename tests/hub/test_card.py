"""Model cards: template shipping, evaluator JSON → model-index, metadata the Hub parses back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard, metadata_load
from peft import LoraConfig

import gcl_hf
from gcl_hf import GCLModel
from gcl_hf.hub.card import build_model_card, default_template_path, eval_results_from_json, hub_id_or_none
from gcl_hf.testing import tiny_clip

ROOT = Path(__file__).resolve().parents[2]


#: The card row of the default negatives (the value the loss resolved, described).
EQ2_ROW = "| Negatives | all — one softmax over the batch's image, text and fused embeddings (the paper's Eq. 2) |"

def _meta(card: ModelCard) -> dict:
    """The YAML block as the Hub would read it (huggingface_hub's own regex split)."""
    reparsed = ModelCard(str(card))
    return yaml.safe_load(str(reparsed).split("---")[1]) | {"_data": reparsed.data}


def test_one_template_shipped_in_the_package_and_linked_from_model_cards():
    packaged = default_template_path()
    assert packaged.is_file()
    assert Path(gcl_hf.__file__).parent in packaged.parents  # found from an installed package, not the checkout
    linked = ROOT / "model_cards" / "gcl_model_card.md.j2"
    assert linked.is_symlink() and linked.resolve() == packaged.resolve()  # one template, no copy to keep in sync


def test_eval_json_shapes_and_metric_names(tmp_path):
    flat = {"mbeir_mscoco_task0": {"recall@5": 0.5, "R@10": 0.7, "num_queries": 100, "seconds": 1.5}}
    wrapped = {"model": "x", "results": flat}
    listed = [{"task": "mbeir_mscoco_task0", "metrics": {"recall_at_5": 0.5, "recall@10": 0.7}, "split": "test"},
              {"task": "CIRR", "precision@1": 0.3, "mrr": 0.4},
              {"task": "covr_test", "recall@50": 0.9}, {"task": "mine", "dataset": "me/data", "ndcg@10": 0.2}]
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(wrapped))
    for source in (flat, wrapped, path, str(path)):
        results = eval_results_from_json(source)
        assert [(r.metric_type, r.metric_name, r.metric_value) for r in results] == [
            ("recall_at_5", "Recall@5", 0.5), ("recall_at_10", "Recall@10", 0.7)]
        assert results[0].dataset_type == "TIGER-Lab/M-BEIR" and results[0].dataset_config == "mbeir_mscoco_task0"
    results = eval_results_from_json(listed)
    got = {(r.dataset_config, r.dataset_type, r.metric_type, r.dataset_split) for r in results}
    assert got == {
        ("mbeir_mscoco_task0", "TIGER-Lab/M-BEIR", "recall_at_5", "test"),
        ("mbeir_mscoco_task0", "TIGER-Lab/M-BEIR", "recall_at_10", "test"),
        ("CIRR", "TIGER-Lab/MMEB-eval", "precision_at_1", None), ("CIRR", "TIGER-Lab/MMEB-eval", "mrr", None),
        ("covr_test", "covr", "recall_at_50", None), ("mine", "me/data", "ndcg_at_10", None),
    }


def test_eval_json_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": {"recall@5": 0.5},\n oops}')
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON \(line 2"):
        eval_results_from_json(bad)
    with pytest.raises(ValueError, match=r"eval results\[1\]: missing field 'task'"):
        eval_results_from_json([{"task": "t", "recall@1": 1.0}, {"metrics": {"recall@1": 1.0}}])
    with pytest.raises(ValueError, match=r"\"t\": metric 'recall@5' is 'high'"):
        eval_results_from_json({"t": {"recall@5": "high"}})
    with pytest.raises(ValueError, match="no metrics found"):
        eval_results_from_json({"t": {"num_queries": 3}})


def test_card_metadata_round_trips_through_huggingface_hub(tmp_path):
    model = GCLModel.from_backbone(tiny_clip(), fusion="mean", negatives="all", pair_weights=[1, 1, 2, 2, 1, 1])
    card = build_model_card(
        model, repo_id="me/gcl-tiny", form="full", base_model="openai/clip-vit-base-patch32",
        eval_results={"mbeir_mscoco_task0": {"recall@5": 0.61}}, license="mit", language="en", tags=["demo"],
        training_info={"datasets": "liuhaotian/LLaVA-Pretrain", "data_description": "LCS-558K captions",
                       "learning_rate": 1e-5, "per_device_train_batch_size": 64, "note": "a|b"},
    )
    meta = _meta(card)
    assert meta["library_name"] == "gcl-hf" and meta["license"] == "mit" and meta["language"] == "en"
    assert meta["base_model"] == "openai/clip-vit-base-patch32" and meta["base_model_relation"] == "finetune"
    assert meta["datasets"] == ["liuhaotian/LLaVA-Pretrain"]
    assert {"gcl", "gcl-hf", "multimodal-retrieval", "clip", "transformers", "demo"} <= set(meta["tags"])
    index = meta["model-index"][0]
    assert index["name"] == "gcl-tiny"
    assert index["results"][0]["metrics"] == [{"type": "recall_at_5", "value": 0.61, "name": "Recall@5"}]
    assert meta["_data"].eval_results[0].metric_value == 0.61
    path = tmp_path / "README.md"
    card.save(path)
    assert metadata_load(path)["model-index"] == meta["model-index"]
    text = card.text
    assert EQ2_ROW in text and "1, 1, 2, 2, 1, 1" in text and "`mean`" in text
    assert "LCS-558K captions" in text and "| `learning_rate` | `1e-05` |" in text
    assert "`a\\|b`" in text  # table cells are escaped
    assert "| mbeir_mscoco_task0 | M-BEIR | — | Recall@5 | 0.6100 |" in text


def test_card_for_each_form_and_lora_section():
    model = GCLModel.from_backbone(tiny_clip())
    model.apply_lora(LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["q_proj", "v_proj"]))
    cards = {form: build_model_card(model, repo_id="me/m", form=form, base_model="me/base")
             for form in ("full", "adapter", "backbone")}
    metas = {form: _meta(card) for form, card in cards.items()}
    assert {f: m["library_name"] for f, m in metas.items()} == {
        "full": "gcl-hf", "adapter": "peft", "backbone": "transformers"}
    assert metas["adapter"]["base_model_relation"] == "adapter" and "lora" in metas["adapter"]["tags"]
    assert "model-index" not in metas["full"]
    for form, card in cards.items():
        assert "| `r` | `8` |" in card.text and "| `lora_alpha` | `16` |" in card.text
        assert '["q_proj", "v_proj"]' in card.text
    assert "PeftModel.from_pretrained(base, \"me/m\"" in cards["adapter"].text
    assert "CLIPModel.from_pretrained(\"me/m\"" in cards["backbone"].text
    assert "normalize(image_features + text_features)" in cards["backbone"].text
    assert "merged into the backbone" in cards["backbone"].text
    assert "No evaluation results" in cards["full"].text


def test_base_model_only_when_it_is_a_hub_id(tmp_path):
    assert hub_id_or_none("openai/clip-vit-base-patch32") == "openai/clip-vit-base-patch32"
    assert hub_id_or_none("bert-base-uncased") == "bert-base-uncased"
    assert hub_id_or_none(str(tmp_path)) is None and hub_id_or_none("") is None and hub_id_or_none(None) is None
    assert hub_id_or_none("/abs/path/x") is None and hub_id_or_none("a/b/c") is None
    meta = _meta(build_model_card(GCLModel.from_backbone(tiny_clip()), repo_id="me/m"))
    assert "base_model" not in meta and "base_model_relation" not in meta


def test_credentials_never_reach_the_card(tmp_path):
    from transformers import TrainingArguments

    secret = "hf_SecretValue0123456789abcdefghijklmn"
    info = {"hub_token": secret, "api_key": secret, "HF_TOKEN": secret, "wandb_password": secret, "lr": 0.1}
    card = build_model_card(GCLModel.from_backbone(tiny_clip()), repo_id="me/m", training_info=info)
    assert secret not in str(card) and "| `lr` | `0.1` |" in card.text
    args = TrainingArguments(output_dir=str(tmp_path), hub_token=secret, learning_rate=3e-4, report_to=[])
    card = build_model_card(GCLModel.from_backbone(tiny_clip()), repo_id="me/m", training_info=args)
    assert secret not in str(card)
    assert "| `learning_rate` | `0.0003` |" in card.text and "output_dir" not in card.text


def test_custom_template_and_bad_form(tmp_path):
    template = tmp_path / "card.md.j2"
    template.write_text("---\n{{ card_data }}\n---\n\n# {{ info.title }} / fusion {{ info.gcl.fusion }}\n")
    card = build_model_card(GCLModel.from_backbone(tiny_clip()), repo_id="me/custom", template_path=template)
    assert card.text.strip() == "# custom: a GCL-trained CLIPModel / fusion sum"
    assert card.data.library_name == "gcl-hf"
    with pytest.raises(ValueError, match="form='merged'"):
        build_model_card(GCLModel.from_backbone(tiny_clip()), repo_id="me/m", form="merged")


def test_card_from_real_training_arguments_shows_the_loss_settings(tmp_path):
    import sys

    from gcl_hf.hub.card import render_training_card
    from gcl_hf.testing import tiny_processor
    from gcl_hf.training.arguments import GCLTrainingArguments
    from gcl_hf.training.trainer import GCLTrainer

    sys.path.insert(0, str(ROOT / "tests" / "scripts"))
    from train_dist_check import dataset

    args = GCLTrainingArguments(
        output_dir=str(tmp_path / "run"), pairs="image->text,text->image,image->fused,fused->image",
        pair_weights="1,1,2,2", negatives="all", gradient_cache_chunk_size=4, lora_r=4, lora_alpha=8,
        learning_rate=3e-4, per_device_train_batch_size=4, max_steps=1, report_to=[], use_cpu=True,
        save_strategy="no", disable_tqdm=True)
    trainer = GCLTrainer(GCLModel.from_backbone(tiny_clip()), args, train_dataset=dataset(),
                         processing_class=tiny_processor())
    model = trainer.model
    assert model.config.negatives == "all"  # the trainer applied the arguments: the config is the truth
    card = render_training_card(model, args, output_dir=args.output_dir, datasets=["me/pairs"])
    text = (tmp_path / "run" / "README.md").read_text()
    assert card.text in text and metadata_load(tmp_path / "run" / "README.md")["datasets"] == ["me/pairs"]
    assert "# run: a GCL-trained CLIPModel" in text  # repo id: the output directory's name
    pairs = "image → text, text → image, image → fused, fused → image"
    assert f"| Pairs (anchor → candidates) | {pairs} |" in text
    assert "| Pair weights | 1.0, 1.0, 2.0, 2.0 |" in text and EQ2_ROW in text
    for row in ("| `pairs` | `image->text,text->image,image->fused,fused->image` |", "| `pair_weights` | `1,1,2,2` |",
                "| `negatives` | `all` |", "| `gradient_cache_chunk_size` | `4` |", "| `learning_rate` | `0.0003` |",
                "| `r` | `4` |", "| `lora_alpha` | `8` |"):
        assert row in text, row
    for unset in ("`objective`", "`fusion`", "`freeze_vision`", "`train_logit_scale`", "`lora_r`", "`gcl_"):
        assert f"| {unset}" not in text, unset  # defaults and the LoRA shortcuts are not rows of their own
    assert "sentence-transformers" not in metadata_load(tmp_path / "run" / "README.md")["tags"]  # no processor

    args.hub_model_id = "me/gcl-run"
    model.merge_lora()  # LoRA merged before the card: the shortcuts still say how it was trained
    tiny_processor().save_pretrained(tmp_path / "run")
    text = render_training_card(model, args, output_dir=args.output_dir).text
    assert "# gcl-run: a GCL-trained CLIPModel" in text and "| `r` | `4` |" in text
    assert "merged into the backbone" in text and "stored unmerged" not in text
    assert 'SentenceTransformer("me/gcl-run"' in text


def test_sentence_transformers_tag_and_snippet_where_the_form_loads():
    model = GCLModel.from_backbone(tiny_clip())
    model.apply_lora(LoraConfig(r=2, target_modules=["q_proj"]))
    for form in ("full", "adapter", "backbone"):
        for has_processor in (True, False):
            card = build_model_card(model, repo_id="me/m", form=form, base_model="me/base",
                                    has_processor=has_processor)
            loads = form != "adapter" and has_processor
            assert ("sentence-transformers" in _meta(card)["tags"]) == loads, (form, has_processor)
            assert ('SentenceTransformer("me/m"' in card.text) == loads, (form, has_processor)
            assert ("encode_fused(model" in card.text) == (loads and form == "backbone")
    full = build_model_card(model, repo_id="me/m", form="full", has_processor=True).text
    assert 'fused = model.encode([{"image": image, "text": "a dog"}])' in full and "import gcl_hf" in full
    assert 'embeddings = model.encode(["a photo of a dog", image, {"image": image, "text": "a dog"}])' in full


def test_card_of_lora_with_the_familys_default_targets_lists_them(tmp_path):
    """``lora_target_modules`` unset means the family's defaults: the card showed ``target_modules: []`` once the
    adapters were merged (the model's own LoRA record is gone then, and the card read the empty shortcut)."""
    from gcl_hf.hub.card import render_training_card
    from gcl_hf.testing import tiny_processor
    from gcl_hf.training.arguments import GCLTrainingArguments
    from gcl_hf.training.trainer import GCLTrainer

    args = GCLTrainingArguments(output_dir=str(tmp_path / "run"), lora_r=2, report_to=[], use_cpu=True,
                                save_strategy="no", disable_tqdm=True)
    assert args.lora_target_modules is None
    model = GCLTrainer(GCLModel.from_backbone(tiny_clip()), args, processing_class=tiny_processor()).model
    adapted = sorted({name.rsplit(".", 1)[-1] for name, module in model.backbone.named_modules()
                      if hasattr(module, "lora_A")})  # the modules peft actually wrapped
    assert adapted and set(adapted) <= set(model.family.lora_target_modules)
    row = f"| `target_modules` | `{json.dumps(adapted)}` |"
    for merged in (False, True):
        if merged:
            model.merge_lora()
            assert model.config.lora_config is None
        for card in (render_training_card(model, args, output_dir=args.output_dir),
                     build_model_card(model, repo_id="me/m", form="backbone" if merged else "full",
                                      training_info=args)):
            assert row in card.text, (merged, [line for line in card.text.splitlines() if "target" in line])
            assert "`[]`" not in card.text and "| `r` | `2` |" in card.text
