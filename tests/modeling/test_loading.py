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


def test_custom_code_only_checkpoint_is_refused_without_suggesting_trust_remote_code(tmp_path):
    """The refusal used to be transformers' own, suggesting ``trust_remote_code=True`` (which gcl-hf never takes)."""
    from gcl_hf.modeling.loading import RemoteCodeError

    tiny_clip().save_pretrained(tmp_path)
    (tmp_path / "evil.py").write_text("from transformers import CLIPModel as EvilModel\n")
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(model_type="evil-clip", auto_map={"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"})
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(RemoteCodeError, match="exist only as custom code.*gcl-hf never runs") as err:
        load_backbone(str(tmp_path))
    assert "trust_remote_code" not in str(err.value)


def test_a_processor_without_tokenizer_files_is_refused_naming_the_directory(tmp_path):
    """A backbone directory without tokenizer files used to load an empty vocabulary: every text of one length
    got the same vector."""
    from gcl_hf.modeling.loading import IncompleteModelError, load_processor
    from gcl_hf.testing import tiny_processor

    tiny_clip().save_pretrained(tmp_path)  # a backbone directory: config.json names the tokenizer class
    tiny_processor().save_pretrained(tmp_path)
    assert load_processor(tmp_path).tokenizer("a photo")["input_ids"]  # complete: loads
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"):
        (tmp_path / name).unlink(missing_ok=True)
    with pytest.raises(IncompleteModelError, match=rf"{tmp_path}: the processor cannot tokenize: its tokenizer has "
                                                   r"\d+ tokens, all special \(no tokenizer\.json"):
        load_processor(tmp_path)


def _max_length(processor) -> int:
    return processor.tokenizer.model_max_length


def test_find_processor_takes_the_explicit_one_then_the_models_own_then_the_backbones(tmp_path):
    """One owner of "which processor goes with this model": `GCLModel.encode`, mteb and the CLI all ask it."""
    from gcl_hf.modeling.loading import ProcessorNotFoundError, find_processor
    from gcl_hf.testing import tiny_processor

    backbone_dir, saved_dir, explicit_dir = tmp_path / "clip", tmp_path / "gcl", tmp_path / "proc"
    tiny_clip().save_pretrained(backbone_dir)
    tiny_processor(max_length=32).save_pretrained(backbone_dir)
    tiny_processor(max_length=24).save_pretrained(explicit_dir)
    GCLModel.from_backbone(str(backbone_dir)).save_pretrained(saved_dir)  # no processor beside it
    model = GCLModel.from_pretrained(saved_dir)
    assert _max_length(find_processor(model)) == 32  # the saved dir has none: the backbone's recorded name
    assert _max_length(find_processor(model, processor=explicit_dir)) == 24
    tiny_processor(max_length=20).save_pretrained(saved_dir)
    assert _max_length(find_processor(model)) == 20  # the model's own directory before its backbone's
    model.processor = tiny_processor(max_length=28)
    assert _max_length(find_processor(model)) == 28  # attached
    assert _max_length(find_processor(model, processor=explicit_dir)) == 24  # explicit beats attached
    with pytest.raises(ProcessorNotFoundError) as err:  # an explicit path is the only candidate
        find_processor(model, processor=tmp_path / "missing")
    assert err.value.tried and all(t.startswith(str(tmp_path / "missing")) for t in err.value.tried)


def test_find_processor_names_every_candidate_when_offline():
    from gcl_hf.modeling.loading import ProcessorNotFoundError, find_processor

    model = GCLModel.from_backbone(tiny_clip())
    with pytest.raises(ProcessorNotFoundError, match="needs a processor.*no name_or_path to look in"):
        find_processor(model)
    with pytest.raises(ProcessorNotFoundError, match=r"tried gcl-hf-test/not-cached: ") as err:
        find_processor(model, name_or_path="gcl-hf-test/not-cached", revision="v1")
    assert [t.split(":")[0] for t in err.value.tried] == ["gcl-hf-test/not-cached"]
