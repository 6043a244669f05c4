"""GCLTrainingArguments / GCLTrainer: flags, loss settings, per-pair logs, LoRA life cycle, freezing,
NaN guard, resume, bad images, evaluation."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel
from PIL import Image
from transformers import CLIPModel, HfArgumentParser, TrainerCallback

from gcl_hf import GCLModel
from gcl_hf.data.images import ImageLoadError
from gcl_hf.testing import tiny_clip, tiny_processor
from gcl_hf.training.trainer import GCLTrainer, NonFiniteLossError, load_adapter
from gcl_hf.training.arguments import GCLTrainingArguments

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
from train_dist_check import dataset  # noqa: E402

SIX = ["image->text", "text->image", "image->fused", "fused->image", "text->fused", "fused->text"]



def _args(tmp_path, name="run", **overrides) -> GCLTrainingArguments:
    kwargs = dict(output_dir=str(tmp_path / name), per_device_train_batch_size=4, max_steps=2, learning_rate=1e-3,
                  logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0,
                  seed=0, disable_tqdm=True)
    kwargs.update(overrides)
    return GCLTrainingArguments(**kwargs)


def _trainer(tmp_path, model=None, name="run", train_dataset=None, **overrides) -> GCLTrainer:
    model = model if model is not None else GCLModel.from_backbone(tiny_clip())
    return GCLTrainer(model, _args(tmp_path, name, **overrides),
                      train_dataset=dataset() if train_dataset is None else train_dataset,
                      processing_class=tiny_processor())


def _logs(trainer: GCLTrainer) -> list[dict]:
    return [h for h in trainer.state.log_history if "loss" in h]


def _probe():
    proc = tiny_processor()
    rng = np.random.default_rng(7)
    images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(3)]
    return proc(images=images, text=["a red square", "blue circle", "two green dots"], padding=True,
                return_tensors="pt")


# ---------------------------------------------------------------------------------------------- arguments


def test_every_gcl_field_is_a_cli_flag_with_help():
    parser = HfArgumentParser(GCLTrainingArguments)
    help_text = parser.format_help()
    for flag in ("--pairs", "--pair_weights", "--negatives", "--objective", "--fusion", "--gradient_cache_chunk_size",
                 "--train_logit_scale", "--freeze_vision", "--freeze_text", "--lora_r", "--lora_alpha",
                 "--lora_dropout", "--lora_target_modules", "--image_column", "--caption_column", "--image_errors",
                 "--nan_guard"):
        assert flag in help_text
    (args,) = parser.parse_args_into_dataclasses([
        "--output_dir", "/tmp/x", "--pairs", "image->text,text->image,image->fused", "--pair_weights", "1,1,2",
        "--negatives", "all", "--objective", "softmax", "--fusion", "mlp", "--gradient_cache_chunk_size", "16",
        "--train_logit_scale", "false", "--freeze_text", "--lora_r", "8", "--lora_target_modules", "q_proj,v_proj",
        "--use_cpu",
    ])
    assert args.remove_unused_columns is False  # raw image / caption columns reach the collator
    assert (args.negatives, args.fusion, args.gradient_cache_chunk_size) == ("all", "mlp", 16)
    assert args.train_logit_scale is False and args.freeze_text and not args.freeze_vision
    lora = args.lora_config()
    assert lora.r == 8 and set(lora.target_modules) == {"q_proj", "v_proj"}
    updates = args.gcl_config_updates([("image", "text")])
    assert updates["pairs"] == [["image", "text"], ["text", "image"], ["image", "fused"]]
    assert updates["pair_weights"] == [1.0, 1.0, 2.0] and updates["negatives"] == "all"
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(["--output_dir", "/tmp/x", "--negatives", "some"])


def test_bad_gcl_arguments_name_the_field():
    with pytest.raises(ValueError, match="image"):
        GCLTrainingArguments(output_dir="/tmp/x", pairs="image->image")
    with pytest.raises(ValueError, match="2 weights for 6 pairs"):
        GCLTrainingArguments(output_dir="/tmp/x", pairs="all", pair_weights="1,2")
    with pytest.raises(ValueError, match="gradient_cache_chunk_size"):
        GCLTrainingArguments(output_dir="/tmp/x", gradient_cache_chunk_size=0)
    with pytest.raises(ValueError, match="lora_r"):
        GCLTrainingArguments(output_dir="/tmp/x", lora_r=0)
    assert GCLTrainingArguments(output_dir="/tmp/x", pair_weights="image->fused=3").gcl_config_updates(
        [("image", "text"), ("image", "fused")])["pair_weights"] == [1.0, 3.0]


def test_trainer_refuses_inconsistent_setups(tmp_path):
    from transformers import TrainingArguments

    with pytest.raises(TypeError, match="GCLTrainingArguments"):
        GCLTrainer(GCLModel.from_backbone(tiny_clip()), TrainingArguments(output_dir=str(tmp_path)),
                   processing_class=tiny_processor())
    with pytest.raises(ValueError, match="fusion='mlp'"):
        _trainer(tmp_path, fusion="mlp")  # the model was built with "sum"
    with pytest.raises(ValueError, match="processing_class"):
        GCLTrainer(GCLModel.from_backbone(tiny_clip()), _args(tmp_path))
    with pytest.raises(ValueError, match="logit bias"):
        _trainer(tmp_path, objective="sigmoid")  # CLIP has no logit bias: build the model for it


# ---------------------------------------------------------------------------------------------- loss and logs


def test_loss_settings_apply_and_each_pair_is_logged(tmp_path):
    trainer = _trainer(tmp_path, pairs="image->text,text->image,image->fused", pair_weights="1,1,2", negatives="all",
                       max_steps=3)
    config = trainer.model.config
    assert config.pair_tuples == [("image", "text"), ("text", "image"), ("image", "fused")]
    assert config.pair_weights == [1.0, 1.0, 2.0] and config.negatives == "all"
    trainer.train()
    logs = _logs(trainer)
    assert len(logs) == 3
    for log in logs:
        pairs = {k[len("loss/"):]: v for k, v in log.items() if k.startswith("loss/")}
        assert list(pairs) == ["image->text", "text->image", "image->fused"]
        weighted = (pairs["image->text"] + pairs["text->image"] + 2 * pairs["image->fused"]) / 4
        assert log["loss"] == pytest.approx(weighted, rel=1e-5)


def test_backbone_instance_is_wrapped_and_model_config_kept_by_default(tmp_path):
    trainer = GCLTrainer(tiny_clip(), _args(tmp_path, fusion="mean", max_steps=1), train_dataset=dataset(),
                         processing_class=tiny_processor())
    assert isinstance(trainer.model, GCLModel) and trainer.model.config.fusion == "mean"
    assert [list(p) for p in trainer.model.config.pairs] == [p.split("->") for p in SIX]
    trainer.train()
    assert [k[5:] for k in _logs(trainer)[0] if k.startswith("loss/")] == SIX


def test_eval_dataset_reports_loss_and_pair_losses(tmp_path):
    trainer = GCLTrainer(GCLModel.from_backbone(tiny_clip()), _args(tmp_path, per_device_eval_batch_size=8),
                         train_dataset=dataset(), eval_dataset=dataset(), processing_class=tiny_processor())
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] > 0 and {f"eval_loss/{p}" for p in SIX} <= set(trainer.state.log_history[-1])
    pairs = [trainer.state.log_history[-1][f"eval_loss/{p}"] for p in SIX]
    assert metrics["eval_loss"] == pytest.approx(sum(pairs) / 6, rel=1e-5)


# ---------------------------------------------------------------------------------------------- what trains


def test_peft_config_trains_adapters_and_temperature_only(tmp_path):
    model = GCLModel.from_backbone(tiny_clip())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = GCLTrainer(model, _args(tmp_path, max_steps=3, learning_rate=1e-2), train_dataset=dataset(),
                         processing_class=tiny_processor(),
                         peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    assert isinstance(trainer.model.backbone, PeftModel)
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert {n for n in trainable if "lora_" not in n} == {"backbone.base_model.model.logit_scale"}
    trainer.train()
    after = trainer.model.state_dict()
    changed = {k for k, v in after.items() if k.replace("base_model.model.", "").replace(".base_layer", "") in before
               and not torch.equal(v, before[k.replace("base_model.model.", "").replace(".base_layer", "")])}
    assert changed == {"backbone.base_model.model.logit_scale"}  # frozen base weights did not move
    lora_b = [v for k, v in after.items() if "lora_B" in k]
    assert lora_b and all(v.abs().max() > 0 for v in lora_b)  # adapters (initialised to zero) trained


def test_lora_shortcuts_and_frozen_temperature(tmp_path):
    trainer = _trainer(tmp_path, lora_r=2, lora_alpha=4, lora_target_modules="q_proj", train_logit_scale=False)
    backbone = trainer.model.backbone
    assert isinstance(backbone, PeftModel) and backbone.peft_config["default"].r == 2
    scale = trainer.model.log_logit_scale_param.detach().clone()
    trainer.train()
    assert torch.equal(trainer.model.log_logit_scale_param, scale)


def test_freeze_vision_keeps_the_vision_tower(tmp_path):
    trainer = _trainer(tmp_path, freeze_vision=True, learning_rate=1e-2)
    backbone = trainer.model.backbone
    vision = {k: v.clone() for k, v in backbone.vision_model.state_dict().items()}
    projection = backbone.visual_projection.weight.clone()
    text = backbone.text_projection.weight.clone()
    trainer.train()
    assert all(torch.equal(v, vision[k]) for k, v in backbone.vision_model.state_dict().items())
    assert torch.equal(backbone.visual_projection.weight, projection)
    assert not torch.equal(backbone.text_projection.weight, text)


def test_lora_life_cycle_adapter_reload_merge_plain_backbone(tmp_path):
    trainer = GCLTrainer(GCLModel.from_backbone(tiny_clip()), _args(tmp_path, max_steps=3, learning_rate=5e-2),
                         train_dataset=dataset(), processing_class=tiny_processor(),
                         peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj",
                                                                                 "out_proj"]))
    trainer.train()
    trained = trainer.model.eval()
    adapter_dir = trainer.save_adapter()
    assert {"adapter_config.json", "adapter_model.safetensors", "gcl_extra.safetensors"} <= {
        p.name for p in Path(adapter_dir).iterdir()}
    probe = _probe()
    with torch.no_grad():
        image = trained.encode_image(probe["pixel_values"])
        text = trained.encode_text(probe["input_ids"], probe["attention_mask"])
        fresh = GCLModel.from_backbone(tiny_clip()).eval()
        assert (fresh.encode_image(probe["pixel_values"]) - image).abs().max() > 1e-3  # training changed it

        reloaded = load_adapter(GCLModel.from_backbone(tiny_clip()), adapter_dir).eval()
        assert isinstance(reloaded.backbone, PeftModel)
        torch.testing.assert_close(reloaded.encode_image(probe["pixel_values"]), image, rtol=0, atol=1e-6)
        torch.testing.assert_close(reloaded.logit_scale(), trained.logit_scale(), rtol=0, atol=0)

        reloaded.merge_lora()
        assert isinstance(reloaded.backbone, CLIPModel)
        torch.testing.assert_close(reloaded.encode_text(probe["input_ids"], probe["attention_mask"]), text,
                                   rtol=0, atol=1e-5)

        reloaded.save_backbone(tmp_path / "merged")
        plain = CLIPModel.from_pretrained(tmp_path / "merged").eval()
        plain_image = F.normalize(plain.get_image_features(pixel_values=probe["pixel_values"]).pooler_output, dim=-1)
        plain_text = F.normalize(plain.get_text_features(input_ids=probe["input_ids"],
                                                         attention_mask=probe["attention_mask"]).pooler_output, dim=-1)
        torch.testing.assert_close(plain_image, image, rtol=0, atol=1e-5)
        torch.testing.assert_close(plain_text, text, rtol=0, atol=1e-5)
        torch.testing.assert_close(plain.logit_scale, trained.log_logit_scale_param.detach(), rtol=0, atol=0)




def test_trainer_and_hub_adapters_are_one_format(tmp_path):
    """An adapter saved by the trainer loads through gcl_hf.hub.load, and one written for the Hub loads through
    load_adapter: the same files, the same model (LoRA, temperature and "mlp" fusion head)."""
    from gcl_hf import hub as gcl_hub

    base_dir = tmp_path / "base"
    tiny_clip().save_pretrained(base_dir)  # a local base model the adapter can name
    model = GCLModel.from_backbone(CLIPModel.from_pretrained(base_dir), fusion="mlp")
    trainer = GCLTrainer(model, _args(tmp_path, max_steps=2, learning_rate=5e-2), train_dataset=dataset(),
                         processing_class=tiny_processor(),
                         peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    trainer.train()
    trained = trainer.model.eval()
    probe = _probe()
    with torch.no_grad():
        expected = trained.encode_fused(**probe)
        untrained = GCLModel.from_backbone(CLIPModel.from_pretrained(base_dir), fusion="mlp").eval()
        assert (untrained.encode_fused(**probe) - expected).abs().max() > 1e-3  # training changed it

    from_trainer = gcl_hub.load(trainer.save_adapter(tmp_path / "trainer-adapter"))
    assert isinstance(from_trainer.backbone, PeftModel) and from_trainer.config.fusion == "mlp"

    hub_dir = gcl_hub.save_for_hub(trained, tmp_path / "hub-adapter", repo_id="fake-user/gcl-lora", form="adapter",
                                   base_model="fake-user/tiny-clip-base")
    from_hub = load_adapter(GCLModel.from_backbone(CLIPModel.from_pretrained(base_dir), fusion="mlp"), hub_dir)
    for reloaded in (from_trainer, from_hub.eval()):
        with torch.no_grad():
            torch.testing.assert_close(reloaded.encode_fused(**probe), expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(reloaded.logit_scale(), trained.logit_scale(), rtol=0, atol=0)
# ---------------------------------------------------------------------------------------------- robustness


class _PoisonFusionHead(TrainerCallback):
    """Simulate a divergence: the fusion head's output weights become NaN before step ``at``."""

    def __init__(self, at: int):
        self.at = at

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 == self.at:
            model.fusion_head.fc2.weight.data.fill_(float("nan"))


def test_nan_guard_names_the_step_and_the_pairs(tmp_path):
    # per-pair negatives keep a NaN fused embedding out of the image<->text terms (with the default, Eq. 2, every
    # term's softmax also sums over the fused items, so all six pairs would be NaN)
    trainer = GCLTrainer(GCLModel.from_backbone(tiny_clip(), fusion="mlp"),
                         _args(tmp_path, max_steps=4, negatives="modality"),
                         train_dataset=dataset(), processing_class=tiny_processor(), callbacks=[_PoisonFusionHead(3)])
    with pytest.raises(NonFiniteLossError) as info:
        trainer.train()
    message = str(info.value)
    assert "training step 3" in message
    fused_pairs = ["image->fused", "fused->image", "text->fused", "fused->text"]
    assert info.value.step == 3 and info.value.pairs == fused_pairs
    assert all(f"{p} = nan" in message for p in fused_pairs)
    assert "image->text" not in message and "text->image" not in message  # those stayed finite
    assert trainer.state.global_step == 2


def test_nan_guard_in_the_gradient_cache_path(tmp_path):
    trainer = GCLTrainer(GCLModel.from_backbone(tiny_clip(), fusion="mlp"),
                         _args(tmp_path, max_steps=4, gradient_cache_chunk_size=2),
                         train_dataset=dataset(), processing_class=tiny_processor(), callbacks=[_PoisonFusionHead(2)])
    with pytest.raises(NonFiniteLossError, match="training step 2"):
        trainer.train()


def _with_dropout(model: GCLModel, p: float) -> GCLModel:
    for module in model.modules():
        if isinstance(getattr(module, "dropout", None), float):
            module.dropout = p
    return model


@pytest.mark.parametrize("setup", ["full", "lora+gradient_cache"])
def test_resume_from_checkpoint_reproduces_the_loss_curve(tmp_path, setup):
    common = dict(max_steps=6, save_strategy="steps", save_steps=2, learning_rate=5e-3)
    if setup != "full":
        common.update(lora_r=4, gradient_cache_chunk_size=2, learning_rate=2e-2)
    full = _trainer(tmp_path, _with_dropout(GCLModel.from_backbone(tiny_clip()), 0.2), name="full", **common)
    full.train()
    reference = _logs(full)
    assert len(reference) == 6

    # the same starting model (a resume with another one is refused: tests/training/test_checkpoints.py)
    resumed = _trainer(tmp_path, _with_dropout(GCLModel.from_backbone(tiny_clip()), 0.2), name="resumed",
                       **common)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    after = [h for h in _logs(resumed) if h["step"] > 2]
    assert [h["step"] for h in after] == [3, 4, 5, 6]
    for ref, got in zip(reference[2:], after):
        assert got["loss"] == pytest.approx(ref["loss"], rel=1e-6, abs=1e-7)
        assert got["loss/fused->text"] == pytest.approx(ref["loss/fused->text"], rel=1e-6, abs=1e-7)
    final = full.model.state_dict()
    diff = max((v - final[k]).abs().max().item() for k, v in resumed.model.state_dict().items())
    assert diff < 1e-6


def _image_dataset(tmp_path, n=8, missing=None, corrupt=None):
    import datasets

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = tmp_path / f"img{i}.png"
        if i == corrupt:
            path.write_bytes(b"\x89PNG\r\n not really an image")
        elif i != missing:
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return datasets.Dataset.from_dict({"image": paths, "text": [f"caption {i}" for i in range(n)]}), paths


def test_missing_image_error_names_the_row_and_the_path(tmp_path):
    data, paths = _image_dataset(tmp_path, missing=5)
    trainer = _trainer(tmp_path, train_dataset=data)
    with pytest.raises(ImageLoadError) as info:
        trainer.train()
    assert "__index__ 5" in str(info.value) and paths[5] in str(info.value)
    assert "file not found" in str(info.value)


def test_corrupt_image_error_names_the_row_and_the_path(tmp_path):
    data, paths = _image_dataset(tmp_path, corrupt=3)
    with pytest.raises(ImageLoadError) as info:
        _trainer(tmp_path, train_dataset=data).train()
    assert "__index__ 3" in str(info.value) and paths[3] in str(info.value)


def test_bad_image_skipped_and_counted_in_dataloader_workers(tmp_path):
    data, _ = _image_dataset(tmp_path, missing=5)
    trainer = _trainer(tmp_path, train_dataset=data, image_errors="skip", dataloader_num_workers=1)
    trainer.train()
    logs = _logs(trainer)
    assert logs[-1]["skipped_records"] == 1  # counted although the skip happened in a worker process
    assert all(np.isfinite(h["loss"]) for h in logs)


# ---------------------------------------------------------------------------------------------- scripts


@pytest.fixture
def local_checkpoint_and_llava_json(tmp_path):
    """A tiny CLIP checkpoint directory and an LCS-558K-style JSON list with its images."""
    import json

    model_dir = tmp_path / "tiny-clip"
    tiny_clip().save_pretrained(model_dir)
    tiny_processor().save_pretrained(model_dir)
    images = tmp_path / "images" / "00000"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    records = []
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(images / f"{i:09d}.jpg")
        records.append({"id": f"{i:09d}", "image": f"00000/{i:09d}.jpg", "conversations": [
            {"from": "human", "value": "<image>\nRender a clear and concise summary of the photo."},
            {"from": "gpt", "value": f"a photo of thing number {i}"}]})
    data = tmp_path / "blip_laion_cc_sbu_558k.json"
    data.write_text(json.dumps(records))
    return model_dir, data, tmp_path / "images"


def _common_flags(out, model_dir, data, image_root):
    return ["--model_name_or_path", str(model_dir), "--train_data", str(data), "--image_root", str(image_root),
            "--output_dir", str(out), "--per_device_train_batch_size", "4", "--max_steps", "2", "--use_cpu",
            "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1", "--lora_r", "4",
            "--dataloader_num_workers", "0"]


def test_cli_train_lora_writes_model_adapter_and_plain_backbone(tmp_path, local_checkpoint_and_llava_json):
    from gcl_hf.cli.train import main

    model_dir, data, image_root = local_checkpoint_and_llava_json
    out = tmp_path / "cli-out"
    assert main(_common_flags(out, model_dir, data, image_root) + ["--gradient_cache_chunk_size", "2",
                                                                   "--pairs", "all"]) == 0
    gcl = GCLModel.from_pretrained(out).eval()  # the full GCL model (LoRA kept unmerged) reloads
    assert isinstance(gcl.backbone, PeftModel)
    plain = CLIPModel.from_pretrained(out / "backbone").eval()
    probe = _probe()
    with torch.no_grad():
        expected = gcl.encode_image(probe["pixel_values"])
        got = F.normalize(plain.get_image_features(pixel_values=probe["pixel_values"]).pooler_output, dim=-1)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def test_example_script_runs(tmp_path, local_checkpoint_and_llava_json):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_gcl", Path(__file__).parents[2] / "examples" / "train_gcl.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    model_dir, data, image_root = local_checkpoint_and_llava_json
    out = tmp_path / "example-out"
    metrics = example.main(_common_flags(out, model_dir, data, image_root) + ["--fusion", "mlp"])
    assert np.isfinite(metrics["train_loss"])
    assert (out / "adapter" / "gcl_extra.safetensors").is_file() and (out / "backbone" / "config.json").is_file()
    saved = GCLModel.from_pretrained(out).eval()
    assert saved.config.fusion == "mlp" and saved.fusion_head.fc2.weight.abs().max() > 0  # the head trained
    # the adapter directory alone (LoRA + temperature + fusion head) rebuilds the same model on the base checkpoint
    rebuilt = load_adapter(GCLModel.from_backbone(CLIPModel.from_pretrained(model_dir), fusion="mlp"),
                           out / "adapter").eval()
    probe = _probe()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.encode_fused(**probe), saved.encode_fused(**probe), rtol=0, atol=1e-6)


def test_processes_that_do_not_form_a_group_are_refused(tmp_path, monkeypatch):
    """torchrun on a CPU-only machine without --use_cpu starts processes that each train alone."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="--use_cpu"):
        _trainer(tmp_path, use_cpu=False)


def test_remove_unused_columns_is_turned_off(tmp_path):
    trainer = _trainer(tmp_path, remove_unused_columns=True, max_steps=1)
    assert trainer.args.remove_unused_columns is False
    trainer.train()  # the collator still receives the image and caption columns


# ---------------------------------------------------------------------------------------------- retrieval evaluation


def _toy_task(tmp_path):
    import datasets

    from gcl_hf.benchmarks import RetrievalTask

    rng = np.random.default_rng(3)
    folder = tmp_path / "toy_images"
    folder.mkdir()
    names = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"c{i}.png")
        names.append(f"c{i}.png")
    corpus = datasets.Dataset.from_dict({"id": [f"c{i}" for i in range(6)], "text": [None] * 6, "image": names,
                                         "modality": ["image"] * 6})
    queries = datasets.Dataset.from_dict({"id": [f"q{i}" for i in range(4)],
                                          "text": [f"picture {i}" for i in range(4)], "image": [None] * 4,
                                          "modality": ["text"] * 4})
    return RetrievalTask(name="toy_t2i", queries=queries, corpus=corpus, qrels={f"q{i}": {f"c{i}"} for i in range(4)},
                         image_root=str(folder))


def test_eval_tasks_report_recall_during_training(tmp_path):
    from gcl_hf.retrieval.evaluation import evaluate_retrieval

    task = _toy_task(tmp_path)
    trainer = GCLTrainer(GCLModel.from_backbone(tiny_clip()),
                         _args(tmp_path, eval_strategy="steps", eval_steps=1, retrieval_k="1,2"),
                         train_dataset=dataset(), processing_class=tiny_processor(), eval_tasks=[task])
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_toy_t2i_recall@2" in h]
    assert [h["step"] for h in evals] == [1, 2]
    assert not any(k.startswith("loss/") for h in evals for k in h)  # training pair losses stay in training logs
    trainer.model.train()
    metrics = trainer.evaluate()
    assert trainer.model.training  # evaluation puts the model back in the mode it found
    direct = evaluate_retrieval(trainer.model, tiny_processor(), task, k=(1, 2), show_progress=False)
    assert metrics["eval_toy_t2i_recall@1"] == direct["recall@1"]
    assert metrics["eval_toy_t2i_recall@2"] == direct["recall@2"] and 0 <= direct["recall@2"] <= 1
