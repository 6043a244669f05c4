"""`gcl_hf.hub.load` offline: a model loaded once online comes back from the local Hub cache, as transformers
does, without a single request to the Hub (the fake Hub of tests/fake_hub.py records every request)."""

from __future__ import annotations

import pytest
import torch
from fake_hub import FakeHub
from huggingface_hub import constants
from peft import LoraConfig

from gcl_hf import GCLModel
from gcl_hf import hub as gcl_hub
from gcl_hf.hub.loading import HubCacheMissError
from gcl_hf.testing import tiny_clip, tiny_processor

TOKEN = "hf_FakeTokenForTests0123456789abcdef"
BASE = "fake-user/tiny-clip-base"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with FakeHub(tokens={TOKEN: "fake-user"}) as fake:
        fake.activate(monkeypatch, tmp_path / "hf-home")
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        tiny_clip(seed=0).push_to_hub(BASE)
        yield fake
    assert not fake.unhandled, [(r.method, r.path) for r in fake.unhandled]


def _go_offline(monkeypatch) -> None:
    """What ``HF_HUB_OFFLINE=1`` sets: huggingface_hub reads the variable once, at import, into this constant
    (transformers asks ``huggingface_hub.is_offline_mode()``, which returns it)."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def _fused(model: GCLModel) -> torch.Tensor:
    batch = tiny_processor()(images=[torch.zeros(32, 32, 3, dtype=torch.uint8).numpy()], text=["a red square"],
                             return_tensors="pt")
    with torch.no_grad():
        return model.encode_fused(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])


@pytest.mark.parametrize("form", ["full", "adapter", "backbone"])
def test_offline_load_comes_from_the_cache(hub, monkeypatch, form):
    model = GCLModel.from_backbone(BASE, fusion="mean")
    if form == "adapter":
        model.apply_lora(LoraConfig(r=2, target_modules=["q_proj"]))
    repo = f"fake-user/offline-{form}"
    gcl_hub.publish(model, repo, form=form)
    online = gcl_hub.load(repo)  # fills the cache (and records main -> commit)
    seen = len(hub.requests)

    _go_offline(monkeypatch)
    offline = gcl_hub.load(repo)
    assert len(hub.requests) == seen, [(r.method, r.path) for r in hub.requests[seen:]]  # no Hub call at all
    torch.testing.assert_close(_fused(offline), _fused(online), atol=0, rtol=0)
    assert offline.config.fusion == "mean"
    if form == "full":  # loaded by repo id from the cache, not from a snapshot path
        assert offline.name_or_path == repo
    if form == "adapter":
        assert offline.backbone.peft_config["default"].base_model_name_or_path == BASE
    by_commit = gcl_hub.load(repo, revision=hub.commit_sha(repo))
    torch.testing.assert_close(_fused(by_commit), _fused(online), atol=0, rtol=0)


def test_offline_branch_follows_the_last_online_resolution(hub, monkeypatch):
    model = GCLModel.from_backbone(BASE)
    first = gcl_hub.publish(model, "fake-user/moving", commit_message="v1")
    v1 = _fused(gcl_hub.load("fake-user/moving"))
    with torch.no_grad():
        model.backbone.text_projection.weight.mul_(-1)
    gcl_hub.publish(model, "fake-user/moving", commit_message="v2")  # main moves on, never loaded here
    _go_offline(monkeypatch)
    torch.testing.assert_close(_fused(gcl_hub.load("fake-user/moving")), v1, atol=0, rtol=0)
    assert gcl_hub.load("fake-user/moving", revision=first.oid).config.model_type == "gcl"


def test_offline_without_the_cache_says_so(hub, monkeypatch):
    gcl_hub.publish(GCLModel.from_backbone(BASE), "fake-user/never-loaded")
    _go_offline(monkeypatch)
    with pytest.raises(HubCacheMissError, match=r"fake-user/never-loaded@main: the Hub is offline .* local Hub cache"):
        gcl_hub.load("fake-user/never-loaded")
    with pytest.raises(HubCacheMissError, match="v9"):
        gcl_hub.load(BASE, revision="v9")


def test_unreachable_hub_falls_back_to_the_cache(hub, monkeypatch):
    gcl_hub.publish(GCLModel.from_backbone(BASE), "fake-user/cached")
    online = _fused(gcl_hub.load("fake-user/cached"))
    hub.stop()  # the server goes away: connections are refused, HF_HUB_OFFLINE unset
    torch.testing.assert_close(_fused(gcl_hub.load("fake-user/cached")), online, atol=0, rtol=0)


def test_unknown_repo_and_path_are_named(hub, tmp_path):
    with pytest.raises(OSError, match="Repository Not Found: fake-user/nope is neither a local directory"):
        gcl_hub.load("fake-user/nope")
    with pytest.raises(FileNotFoundError, match="no such local directory, and not a Hub repo id"):
        gcl_hub.load(str(tmp_path / "missing" / "model"))
