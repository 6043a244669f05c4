"""`gcl-hf push` fails in one line, before it builds or uploads anything: no token, the Hub unreachable, a form
the model cannot be published in (``--base-model`` for an adapter)."""

from __future__ import annotations

import socket

import pytest
from peft import LoraConfig

from fake_hub import FakeHub
from gcl_hf import GCLModel, cli
from gcl_hf.testing import tiny_clip, tiny_processor

TOKEN = "hf_FakeTokenForTests0123456789abcdef"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with FakeHub(tokens={TOKEN: "fake-user"}) as fake:
        fake.activate(monkeypatch, tmp_path / "hf-home")
        yield fake


@pytest.fixture
def model_dir(tmp_path):
    path = tmp_path / "model"
    GCLModel.from_backbone(tiny_clip(seed=0)).save_pretrained(path)
    tiny_processor().save_pretrained(path)
    return path


@pytest.fixture
def lora_dir(tmp_path):
    """A LoRA model whose backbone has no Hub id (a random local tiny CLIP)."""
    path = tmp_path / "lora"
    model = GCLModel.from_backbone(tiny_clip(seed=0)).apply_lora(LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(path)
    return path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("gcl-hf push: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_the_forms_offered_are_the_hubs():
    from gcl_hf.cli.push import FORMS
    from gcl_hf.hub.card import FORMS as HUB_FORMS

    assert FORMS == HUB_FORMS


def test_no_token_is_one_line_and_nothing_is_sent(hub, model_dir, capsys):
    assert cli.main(["push", str(model_dir), "fake-user/gcl"]) == 1
    assert "no Hugging Face token" in _error_line(capsys)
    assert not hub.repos.get("fake-user/gcl")


def test_an_unreachable_hub_is_one_line(hub, model_dir, capsys, monkeypatch):
    from huggingface_hub import constants

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert cli.main(["push", str(model_dir), "fake-user/gcl"]) == 1
    line = _error_line(capsys)
    assert "not reachable" in line and f"127.0.0.1:{port}" in line


def test_adapter_without_base_model_names_the_flag(hub, lora_dir, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert cli.main(["push", str(lora_dir), "fake-user/gcl-lora", "--form", "adapter"]) == 1
    line = _error_line(capsys)
    assert "--base-model org/name" in line and "base_model=" not in line
    assert not hub.repos.get("fake-user/gcl-lora")


def test_a_missing_model_directory_is_one_line(hub, tmp_path, capsys):
    assert cli.main(["push", str(tmp_path / "nowhere"), "fake-user/gcl"]) == 1
    assert "nowhere" in _error_line(capsys)


def test_a_push_with_a_valid_token_still_works(hub, model_dir, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert cli.main(["push", str(model_dir), "gcl-bare-name"]) == 0  # a bare name goes under the token's owner
    assert "pushed full form" in capsys.readouterr().out
    assert "fake-user/gcl-bare-name" in hub.repos
