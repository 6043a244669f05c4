"""Publishing to the Hub and loading back, against a local fake of the Hub's HTTP API (tests/fake_hub.py).

Everything above HTTP is the real code path: huggingface_hub's create_repo / create_commit / LFS upload /
hf_hub_download, transformers' push_to_hub / from_pretrained, peft's adapter loading.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from huggingface_hub import ModelCard, hf_hub_download, metadata_load
from peft import LoraConfig, PeftModel
from transformers import AutoModel, AutoProcessor, CLIPModel, PreTrainedModel

import gcl_hf  # noqa: F401 - registers the Auto classes
from gcl_hf import GCLModel
from gcl_hf import hub as gcl_hub
from gcl_hf.testing import tiny_clip, tiny_processor

sys.path.insert(0, str(Path(__file__).parents[1]))
from fake_hub import FakeHub  # noqa: E402

TOKEN = "hf_FakeTokenForTests0123456789abcdef"
OTHER_TOKEN = "hf_SomeoneElse0123456789abcdefghij"
BASE = "fake-user/tiny-clip-base"
EVAL = {"model": "ignored", "results": {
    "mbeir_mscoco_task0": {"recall@1": 0.25, "recall@5": 0.5, "recall@10": 0.75, "num_queries": 4},
    "MSCOCO_i2t": {"precision@1": 0.4},
}}
CAPTIONS = ["a red square", "two blue circles", "a green digit 7", "a yellow triangle"]


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with FakeHub(tokens={TOKEN: "fake-user", OTHER_TOKEN: "someone-else"}) as fake:
        fake.activate(monkeypatch, tmp_path / "hf-home")
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        tiny_clip(seed=0).push_to_hub(BASE)  # the base model lives on the (fake) Hub, as in real use
        yield fake
    assert not fake.unhandled, [(r.method, r.path) for r in fake.unhandled]


def _inputs(processor, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = [(torch.rand(32, 32, 3, generator=g) * 255).to(torch.uint8).numpy() for _ in CAPTIONS]
    return dict(processor(images=images, text=CAPTIONS, padding=True, return_tensors="pt"))


def _train(model: GCLModel, batch: dict, steps: int = 2) -> GCLModel:
    """A couple of hand-written GCL optimizer steps so weights differ from their initial values."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-2)
    model.train()
    for _ in range(steps):
        loss = model(**batch, return_loss=True).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def _embeds(model: GCLModel, batch: dict) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {
            "image": model.encode_image(batch["pixel_values"]),
            "text": model.encode_text(batch["input_ids"], batch["attention_mask"]),
            "fused": model.encode_fused(batch["pixel_values"], batch["input_ids"], batch["attention_mask"]),
        }


def _assert_same(a: dict, b: dict) -> None:
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0, msg=f"{key} embeddings differ")


def _assert_trained(model: GCLModel, batch: dict) -> None:
    fresh = GCLModel.from_backbone(tiny_clip(seed=0), fusion=model.config.fusion).eval()
    assert not torch.allclose(_embeds(fresh, batch)["fused"], _embeds(model, batch)["fused"], atol=1e-4)


def _card(repo_id: str, revision: str) -> tuple[ModelCard, dict]:
    card = ModelCard.load(hf_hub_download(repo_id, "README.md", revision=revision))  # the real parser
    raw = yaml.safe_load(card.content.split("---")[1])
    return card, raw


def _check_common_card(card: ModelCard, raw: dict, *, library: str) -> None:
    assert card.data.library_name == library
    assert card.data.base_model == BASE
    assert {"gcl", "multimodal-retrieval", "clip"} <= set(card.data.tags)
    results = {(r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results == {
        ("mbeir_mscoco_task0", "recall_at_1"): 0.25, ("mbeir_mscoco_task0", "recall_at_5"): 0.5,
        ("mbeir_mscoco_task0", "recall_at_10"): 0.75, ("MSCOCO_i2t", "precision_at_1"): 0.4,
    }
    assert raw["model-index"][0]["results"][0]["dataset"]["type"] == "TIGER-Lab/M-BEIR"
    assert "## How to load" in card.text and "## GCL settings" in card.text


def _files(hub: FakeHub, repo_id: str, revision: str = "main") -> set[str]:
    files = set(hub.files(repo_id, revision))
    assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt")) for f in files), files
    return files


# ------------------------------------------------------------------------------------------ the three forms
def test_full_form_round_trip(hub, tmp_path):
    processor = tiny_processor()
    batch = _inputs(processor)
    model = _train(GCLModel.from_backbone(BASE, fusion="mlp"), batch)
    _assert_trained(model, batch)
    before = _embeds(model, batch)
    eval_path = tmp_path / "eval.json"
    eval_path.write_text(json.dumps(EVAL))

    commit = gcl_hub.publish(model, "fake-user/gcl-full", processor=processor, eval_results=eval_path,
                             training_info={"datasets": ["liuhaotian/LLaVA-Pretrain"], "learning_rate": 0.05})

    assert commit.oid == hub.commit_sha("fake-user/gcl-full")
    assert _files(hub, "fake-user/gcl-full") == {".gitattributes", "README.md", "config.json", "model.safetensors",
                                                  "processor_config.json", "tokenizer.json", "tokenizer_config.json",
                                                  "modules.json", "sentence_bert_config.json",
                                                  "config_sentence_transformers.json"}
    assert hub.repos["fake-user/gcl-full"].commits[commit.oid].files["model.safetensors"].lfs_sha256  # went via LFS
    card, raw = _card("fake-user/gcl-full", commit.oid)
    _check_common_card(card, raw, library="gcl-hf")
    assert card.data.datasets == ["liuhaotian/LLaVA-Pretrain"] and card.data.base_model_relation == "finetune"
    assert "`mlp`" in card.text and 'AutoModel.from_pretrained("fake-user/gcl-full"' in card.text

    loaded = gcl_hub.load("fake-user/gcl-full", revision=commit.oid)
    auto = AutoModel.from_pretrained("fake-user/gcl-full", revision=commit.oid)  # registered on `import gcl_hf`
    assert type(loaded) is GCLModel and type(auto) is GCLModel
    _assert_same(before, _embeds(loaded, batch))
    _assert_same(before, _embeds(auto.eval(), batch))
    torch.testing.assert_close(loaded.logit_scale(), model.logit_scale(), atol=0, rtol=0)
    reloaded_processor = AutoProcessor.from_pretrained("fake-user/gcl-full", revision=commit.oid)
    assert torch.equal(_inputs(reloaded_processor)["input_ids"], batch["input_ids"])


def test_adapter_form_round_trip(hub):
    processor = tiny_processor()
    batch = _inputs(processor)
    model = GCLModel.from_backbone(BASE, fusion="mlp")
    model.apply_lora(LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    _train(model, batch)
    _assert_trained(model, batch)
    before = _embeds(model, batch)

    commit = gcl_hub.publish(model, "fake-user/gcl-lora", form="adapter", eval_results=EVAL)

    files = _files(hub, "fake-user/gcl-lora")
    assert files == {".gitattributes", "README.md", "adapter_config.json", "adapter_model.safetensors",
                     "gcl_config.json", "gcl_extra.safetensors"}
    adapter_config = json.loads(hub.files("fake-user/gcl-lora")["adapter_config.json"])
    assert adapter_config["base_model_name_or_path"] == BASE and adapter_config["r"] == 4
    card, raw = _card("fake-user/gcl-lora", commit.oid)
    _check_common_card(card, raw, library="peft")
    assert card.data.base_model_relation == "adapter" and "lora" in card.data.tags
    assert "| `r` | `4` |" in card.text

    loaded = gcl_hub.load("fake-user/gcl-lora", revision=commit.oid)
    assert loaded.config.fusion == "mlp" and loaded.config.lora_config["r"] == 4
    _assert_same(before, _embeds(loaded, batch))
    torch.testing.assert_close(loaded.logit_scale(), model.logit_scale(), atol=0, rtol=0)

    # peft alone, without gcl-hf: the towers come back identical (fused = the card's formula + the head)
    plain = PeftModel.from_pretrained(CLIPModel.from_pretrained(BASE), "fake-user/gcl-lora", revision=commit.oid)
    with torch.no_grad():
        img = plain.get_image_features(pixel_values=batch["pixel_values"]).pooler_output
    torch.testing.assert_close(F.normalize(img, dim=-1), before["image"], atol=1e-6, rtol=0)


def test_backbone_form_round_trip(hub):
    processor = tiny_processor()
    batch = _inputs(processor)
    model = GCLModel.from_backbone(BASE, fusion="mean")
    model.apply_lora(LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "fc1"]))
    _train(model, batch)
    before = _embeds(model, batch)

    commit = gcl_hub.publish(model, "fake-user/gcl-clip", form="backbone", processor=processor, eval_results=EVAL)

    files = _files(hub, "fake-user/gcl-clip")
    assert {"config.json", "model.safetensors", "gcl_config.json", "README.md"} <= files
    assert not {"adapter_config.json", "adapter_model.safetensors"} & files
    assert json.loads(hub.files("fake-user/gcl-clip")["config.json"])["model_type"] == "clip"
    card, raw = _card("fake-user/gcl-clip", commit.oid)
    _check_common_card(card, raw, library="transformers")
    assert card.data.pipeline_tag == "zero-shot-image-classification"
    assert "merged into the backbone" in card.text

    # transformers alone: a plain CLIPModel with the GCL-trained (LoRA-merged) weights
    clip = CLIPModel.from_pretrained("fake-user/gcl-clip", revision=commit.oid)
    with torch.no_grad():
        img = clip.get_image_features(pixel_values=batch["pixel_values"]).pooler_output
        txt = clip.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output
    img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    _assert_same(before, {"image": img, "text": txt, "fused": F.normalize(img + txt, dim=-1)})

    loaded = gcl_hub.load("fake-user/gcl-clip", revision=commit.oid)
    assert loaded.config.fusion == "mean"
    _assert_same(before, _embeds(loaded, batch))


def test_lossy_forms_are_refused_before_touching_the_hub(hub):
    with pytest.raises(ValueError, match="mlp"):
        gcl_hub.publish(GCLModel.from_backbone(BASE, fusion="mlp"), "fake-user/x", form="backbone")
    with pytest.raises(ValueError, match="LoRA"):
        gcl_hub.publish(GCLModel.from_backbone(BASE), "fake-user/x", form="adapter")
    with pytest.raises(ValueError, match="form='merged'"):
        gcl_hub.publish(GCLModel.from_backbone(BASE), "fake-user/x", form="merged")
    assert "fake-user/x" not in hub.repos


def test_adapter_form_needs_a_hub_base_model(hub):
    model = GCLModel.from_backbone(tiny_clip()).apply_lora(LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="base_model='org/name'"):
        gcl_hub.publish(model, "fake-user/orphan", form="adapter")
    assert "fake-user/orphan" not in hub.repos
    commit = gcl_hub.publish(model, "fake-user/orphan", form="adapter", base_model=BASE,
                             base_model_revision=hub.commit_sha(BASE))
    config = json.loads(hub.files("fake-user/orphan")["adapter_config.json"])
    assert (config["base_model_name_or_path"], config["revision"]) == (BASE, hub.commit_sha(BASE))
    assert gcl_hub.load("fake-user/orphan", revision=commit.oid).config.lora_config["r"] == 2


def test_gcl_model_push_to_hub_writes_our_card(hub):
    """`GCLModel.push_to_hub` (the transformers entry point) publishes through gcl_hf.hub with our card."""
    assert GCLModel.push_to_hub is not PreTrainedModel.push_to_hub
    model = GCLModel.from_backbone(BASE)
    model.push_to_hub("fake-user/native", eval_results=EVAL)
    card, raw = _card("fake-user/native", "main")
    _check_common_card(card, raw, library="gcl-hf")


def test_transformers_push_to_hub_round_trips(hub):
    """Without our card, the plain transformers path also works on a GCLModel (safetensors, AutoModel)."""
    batch = _inputs(tiny_processor())
    model = _train(GCLModel.from_backbone(BASE), batch, steps=1)
    PreTrainedModel.push_to_hub(model, "fake-user/plain")
    assert {"config.json", "model.safetensors"} <= _files(hub, "fake-user/plain")
    _assert_same(_embeds(model, batch), _embeds(AutoModel.from_pretrained("fake-user/plain").eval(), batch))


# ------------------------------------------------------------------------------------------ revisions
def test_revision_pinning_and_branches(hub):
    batch = _inputs(tiny_processor())
    model = _train(GCLModel.from_backbone(BASE), batch, steps=1)
    v1 = _embeds(model, batch)
    first = gcl_hub.publish(model, "fake-user/pinned", commit_message="v1")
    _train(model, batch, steps=1)
    v2 = _embeds(model, batch)
    second = gcl_hub.publish(model, "fake-user/pinned", commit_message="v2")
    assert first.oid != second.oid

    _assert_same(v1, _embeds(gcl_hub.load("fake-user/pinned", revision=first.oid), batch))
    _assert_same(v1, _embeds(GCLModel.from_pretrained("fake-user/pinned", revision=first.oid).eval(), batch))
    _assert_same(v2, _embeds(gcl_hub.load("fake-user/pinned"), batch))

    _train(model, batch, steps=1)
    v3 = _embeds(model, batch)
    branch = gcl_hub.publish(model, "fake-user/pinned", revision="experiment")
    assert hub.commit_sha("fake-user/pinned", "main") == second.oid  # main untouched
    assert hub.commit_sha("fake-user/pinned", "experiment") == branch.oid
    _assert_same(v3, _embeds(gcl_hub.load("fake-user/pinned", revision="experiment"), batch))
    _assert_same(v2, _embeds(gcl_hub.load("fake-user/pinned", revision="main"), batch))


def test_sharded_full_checkpoint_round_trips(hub):
    batch = _inputs(tiny_processor())
    model = _train(GCLModel.from_backbone(BASE), batch, steps=1)
    gcl_hub.publish(model, "fake-user/sharded", max_shard_size="100KB")
    files = _files(hub, "fake-user/sharded")
    shards = [f for f in files if f.startswith("model-") and f.endswith(".safetensors")]
    assert "model.safetensors.index.json" in files and len(shards) >= 2
    _assert_same(_embeds(model, batch), _embeds(gcl_hub.load("fake-user/sharded"), batch))


def test_repo_name_without_namespace_goes_to_the_token_owner(hub):
    commit = gcl_hub.publish(GCLModel.from_backbone(BASE), "bare-name", form="backbone")
    assert "/fake-user/bare-name/commit/" in commit and "config.json" in hub.files("fake-user/bare-name")


def test_republishing_another_form_removes_stale_weights(hub):
    model = GCLModel.from_backbone(BASE)
    gcl_hub.publish(model, "fake-user/switch")
    model.apply_lora(LoraConfig(r=2, target_modules=["q_proj"]))
    gcl_hub.publish(model, "fake-user/switch", form="adapter")
    files = _files(hub, "fake-user/switch")
    assert "config.json" not in files and "model.safetensors" not in files
    assert gcl_hub.load("fake-user/switch").config.lora_config["r"] == 2


# ------------------------------------------------------------------------------------------ safety
def _pickled_clip() -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(tiny_clip(seed=3).state_dict(), buffer)
    return buffer.getvalue()


def test_pickle_only_repo_is_refused_unless_allowed(hub):
    config = tiny_clip().config.to_json_string().encode()
    hub.add_files("fake-user/pickled", {"config.json": config, "pytorch_model.bin": _pickled_clip()})
    with pytest.raises(gcl_hub.UnsafeWeightsError, match=r"pytorch_model\.bin.*allow_pickle=True"):
        gcl_hub.load("fake-user/pickled")
    assert not [r for r in hub.requests if r.path.endswith("pytorch_model.bin")]  # refused before any download

    model = gcl_hub.load("fake-user/pickled", allow_pickle=True)
    expected = tiny_clip(seed=3).text_projection.weight
    torch.testing.assert_close(model.backbone.text_projection.weight, expected, atol=0, rtol=0)


def test_safetensors_preferred_and_pickle_never_fetched(hub):
    model = GCLModel.from_backbone(BASE)
    gcl_hub.publish(model, "fake-user/both", form="backbone")
    hub.add_files("fake-user/both", {"pytorch_model.bin": _pickled_clip()})
    gcl_hub.load("fake-user/both")
    assert not [r for r in hub.requests if r.path.endswith("pytorch_model.bin")]


def test_adapter_on_pickle_only_base_is_refused(hub):
    config = tiny_clip().config.to_json_string().encode()
    hub.add_files("fake-user/pickled-base", {"config.json": config, "pytorch_model.bin": _pickled_clip()})
    model = GCLModel.from_backbone(tiny_clip()).apply_lora(LoraConfig(r=2, target_modules=["q_proj"]))
    gcl_hub.publish(model, "fake-user/adapter-on-pickle", form="adapter", base_model="fake-user/pickled-base")
    with pytest.raises(gcl_hub.UnsafeWeightsError, match="base model fake-user/pickled-base"):
        gcl_hub.load("fake-user/adapter-on-pickle")


def test_token_never_leaves_the_authorization_header(hub, caplog, capsys, monkeypatch):
    import huggingface_hub.utils.logging as hf_logging

    monkeypatch.setattr(hf_logging._get_library_root_logger(), "propagate", True)
    caplog.set_level(logging.DEBUG)
    processor = tiny_processor()
    model = GCLModel.from_backbone(BASE)
    model.apply_lora(LoraConfig(r=2, target_modules=["q_proj"]))
    info = {"datasets": ["liuhaotian/LLaVA-Pretrain"], "hub_token": TOKEN, "push_to_hub_token": TOKEN}
    commits = [gcl_hub.publish(model, f"fake-user/secret-{form}", form=form, processor=processor,
                               training_info=info, eval_results=EVAL, private=True)
               for form in ("full", "adapter", "backbone")]
    for form in ("full", "adapter", "backbone"):
        gcl_hub.load(f"fake-user/secret-{form}")
    print(commits)

    out, err = capsys.readouterr()
    assert TOKEN not in out + err and TOKEN not in caplog.text
    assert any("published" in r.getMessage() for r in caplog.records)  # our log line ran, without the token
    for repo in hub.repos.values():
        for commit in repo.commits.values():
            for path, stored in commit.files.items():
                assert TOKEN.encode() not in stored.content, f"token written into {repo.repo_id}/{path}"
    writes = [r for r in hub.requests if r.method in ("POST", "PUT") and "/fake-lfs/" not in r.path]
    assert writes and all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in writes)
    for r in hub.requests:
        assert TOKEN not in r.path and TOKEN not in json.dumps(r.query), r.path
        assert TOKEN.encode() not in r.body, r.path
        assert all(TOKEN not in v for k, v in r.headers.items() if k != "authorization"), r.path
    # private repos: without a token they are invisible, with another user's token too
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(Exception, match="Repository Not Found|401"):
        gcl_hub.load("fake-user/secret-full")
    with pytest.raises(Exception, match="Repository Not Found|404"):
        gcl_hub.load("fake-user/secret-full", token=OTHER_TOKEN)
    assert type(gcl_hub.load("fake-user/secret-full", token=TOKEN)) is GCLModel


@pytest.mark.parametrize("repo_id", ["fake-user/leaky", "leaky"])
def test_push_refuses_files_containing_the_token_before_creating_the_repo(hub, repo_id):
    model = GCLModel.from_backbone(BASE)
    before, requests = set(hub.repos), len(hub.requests)
    with pytest.raises(RuntimeError, match="README.md: it contains your Hub token") as excinfo:
        gcl_hub.publish(model, repo_id, training_info={"note": f"pushed with {TOKEN}"})
    assert TOKEN not in str(excinfo.value)
    assert set(hub.repos) == before  # nothing created
    writes = [(r.method, r.path) for r in hub.requests[requests:] if r.method in ("POST", "PUT", "DELETE")]
    assert not writes, writes


def test_push_refuses_a_commit_message_containing_the_token(hub):
    before = set(hub.repos)
    with pytest.raises(RuntimeError, match="commit_message"):
        gcl_hub.publish(GCLModel.from_backbone(BASE), "fake-user/leaky-message", commit_message=f"token {TOKEN}")
    assert set(hub.repos) == before


def test_train_then_push_never_writes_nor_logs_the_token(hub, tmp_path, caplog, capsys, monkeypatch):
    """A full run: GCLTrainer with hub_token (checkpoints, final save, adapter), then a push of each form with the
    trainer's arguments as training info. The token may only travel in the Authorization header."""
    import huggingface_hub.utils.logging as hf_logging

    from gcl_hf.training.arguments import GCLTrainingArguments
    from gcl_hf.training.trainer import GCLTrainer

    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    from train_dist_check import dataset

    monkeypatch.setattr(hf_logging._get_library_root_logger(), "propagate", True)
    caplog.set_level(logging.DEBUG)
    processor = tiny_processor()
    out = tmp_path / "run"
    args = GCLTrainingArguments(output_dir=str(out), hub_token=TOKEN, per_device_train_batch_size=4, max_steps=2,
                                save_strategy="steps", save_steps=1, logging_steps=1, lora_r=2, report_to=[],
                                use_cpu=True, dataloader_num_workers=0, seed=0, disable_tqdm=False)
    trainer = GCLTrainer(GCLModel.from_backbone(BASE), args, train_dataset=dataset(), processing_class=processor)
    trainer.train()
    trainer.save_model()
    trainer.save_state()
    trainer.save_adapter()
    print(trainer.args, repr(trainer.args))
    for form in ("full", "adapter", "backbone"):
        gcl_hub.publish(trainer.model, f"fake-user/trained-{form}", form=form, processor=processor,
                        training_info=trainer.args, eval_results=EVAL, private=True)
        gcl_hub.load(f"fake-user/trained-{form}")

    out_text, err_text = capsys.readouterr()
    assert TOKEN not in out_text + err_text and TOKEN not in caplog.text
    written = [p for p in tmp_path.rglob("*") if p.is_file()]  # run dir, checkpoints, adapter, Hub cache
    assert any(p.name == "training_args.bin" for p in written) and any(p.name == "README.md" for p in written)
    leaks = [str(p.relative_to(tmp_path)) for p in written if TOKEN.encode() in p.read_bytes()]
    assert not leaks, f"token written into {leaks}"
    for repo in hub.repos.values():
        for commit in repo.commits.values():
            for path, stored in commit.files.items():
                assert TOKEN.encode() not in stored.content, f"token written into {repo.repo_id}/{path}"
    for r in hub.requests:
        assert TOKEN not in r.path and TOKEN not in json.dumps(r.query), r.path
        assert TOKEN.encode() not in r.body, r.path
        assert all(TOKEN not in v for k, v in r.headers.items() if k != "authorization"), r.path


def test_adapter_with_pickle_weights_is_refused_unless_allowed(tmp_path):
    """peft falls back to adapter_model.bin (a pickle) when there is no safetensors file; load_adapter does not."""
    from safetensors.torch import load_file

    from gcl_hf.hub.adapter import load_adapter, save_adapter

    trained = GCLModel.from_backbone(tiny_clip(seed=0)).apply_lora(LoraConfig(r=2, target_modules=["q_proj"]))
    with torch.no_grad():
        for name, param in trained.named_parameters():
            if "lora_B" in name:
                param.fill_(0.01)
    directory = save_adapter(trained, tmp_path / "adapter")
    torch.save(load_file(directory / "adapter_model.safetensors"), directory / "adapter_model.bin")
    (directory / "adapter_model.safetensors").unlink()
    with pytest.raises(gcl_hub.UnsafeWeightsError, match=r"adapter_model\.bin.*allow_pickle"):
        load_adapter(GCLModel.from_backbone(tiny_clip(seed=0)), directory)
    loaded = load_adapter(GCLModel.from_backbone(tiny_clip(seed=0)), directory, allow_pickle=True).eval()
    batch = _inputs(tiny_processor())
    _assert_same(_embeds(trained.eval(), batch), _embeds(loaded, batch))


def test_push_cli(hub, tmp_path, capsys):
    processor = tiny_processor()
    model = GCLModel.from_backbone(BASE, fusion="mean")
    model.save_pretrained(tmp_path / "trained")
    processor.save_pretrained(tmp_path / "trained")
    (tmp_path / "eval.json").write_text(json.dumps(EVAL))
    from gcl_hf.cli.push import main as push_main

    assert push_main([str(tmp_path / "trained"), "fake-user/from-cli", "--form", "backbone", "--eval-results",
                      str(tmp_path / "eval.json"), "--tag", "demo", "--license", "apache-2.0"]) == 0
    out = capsys.readouterr().out
    assert "pushed backbone form to" in out and TOKEN not in out
    files = _files(hub, "fake-user/from-cli")
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= files
    card, _ = _card("fake-user/from-cli", "main")
    assert "demo" in card.data.tags and card.data.license == "apache-2.0"
    assert gcl_hub.load("fake-user/from-cli").config.fusion == "mean"


def test_card_yaml_is_what_the_hub_parses(hub, tmp_path):
    gcl_hub.publish(GCLModel.from_backbone(BASE), "fake-user/yaml-check", eval_results=EVAL)
    readme = tmp_path / "README.md"
    readme.write_bytes(hub.files("fake-user/yaml-check")["README.md"])
    meta = metadata_load(readme)
    assert meta["library_name"] == "gcl-hf" and meta["base_model"] == BASE
    assert [m["name"] for m in meta["model-index"]] == ["yaml-check"]
    validations = [r for r in hub.requests if r.path == "/api/validate-yaml"]
    assert validations, "huggingface_hub validates README metadata with the Hub before committing"
