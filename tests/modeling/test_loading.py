"""One loading policy: safetensors only unless allow_pickle=True, never remote code, never a prompt."""

import json

import pytest
import torch
from transformers import AutoModel

from gcl_hf import GCLModel
from gcl_hf.modeling.loading import UnsafeWeightsError, load_backbone, safe_loading_kwargs
from gcl_hf.testing import tiny_clip


def _pickle_only(model, directory):
    model.save_pretrained(directory)
    (directory / "model.safetensors").unlink()
    torch.save(model.state_dict(), directory / "pytorch_model.bin")
    return directory


def test_pickle_only_gcl_checkpoint_is_refused_unless_opted_in(tmp_path):
    model = GCLModel.from_backbone(tiny_clip()).eval()
    path = _pickle_only(model, tmp_path / "gcl")
    with pytest.raises(UnsafeWeightsError, match="pytorch_model.bin.*allow_pickle=True"):
        GCLModel.from_pretrained(path)
    with pytest.raises(UnsafeWeightsError):
        AutoModel.from_pretrained(path)  # AutoModel runs GCLModel.from_pretrained: same policy
    loaded = GCLModel.from_pretrained(path, allow_pickle=True)
    torch.testing.assert_close(loaded.logit_scale(), model.logit_scale())


def test_pickle_only_backbone_is_refused_by_from_backbone(tmp_path):
    path = _pickle_only(tiny_clip(), tmp_path / "clip")
    with pytest.raises(UnsafeWeightsError, match="no safetensors weights"):
        GCLModel.from_backbone(str(path))
    assert GCLModel.from_backbone(str(path), allow_pickle=True).config.fusion == "sum"


def test_remote_code_is_never_run_nor_asked_for(tmp_path):
    backbone = tiny_clip()
    backbone.save_pretrained(tmp_path)
    marker = tmp_path / "ran.txt"
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                      "from transformers import CLIPModel as EvilModel\n")
    config = json.loads((tmp_path / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "evil.EvilModel"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = load_backbone(str(tmp_path))  # loads the plain class; no prompt (stdin is not read under pytest)
    assert type(model).__name__ == "CLIPModel" and not marker.exists()
    with pytest.raises(ValueError, match="never loads remote code"):
        safe_loading_kwargs({"trust_remote_code": True})
