"""`gcl-hf convert-vista` on a tiny .pth in the reference's layout."""

import json

import torch

from gcl_hf.cli.main import main

from tests.modeling.vista_layout import reference_state_dict, text_model_dir


def test_convert_then_load(tmp_path, capsys):
    torch.save(reference_state_dict(), tmp_path / "v.pth")
    bge = text_model_dir(tmp_path / "bge")
    assert main(["convert-vista", "--checkpoint", str(tmp_path / "v.pth"), "--text-model", bge,
                 "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "unused checkpoint keys (13)" in out and "bge_pooler.dense.weight" in out and "fused texts up to 48" in out
    from gcl_hf import GCLModel

    model = GCLModel.from_backbone(tmp_path / "out")
    assert model.config.fusion == "backbone"
    assert main(["convert-vista", "--checkpoint", str(tmp_path / "v.pth"), "--text_model", bge,
                 "--output", str(tmp_path / "out2"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["image_tokens"] == 16 and summary["image_only_input_ids"] == [2, 3]


def test_unknown_key_is_one_error_line(tmp_path, capsys):
    sd = reference_state_dict()
    sd["something.else"] = torch.zeros(1)
    torch.save(sd, tmp_path / "v.pth")
    code = main(["convert-vista", "--checkpoint", str(tmp_path / "v.pth"), "--text-model",
                 text_model_dir(tmp_path / "bge"), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "unknown keys" in err and "something.else" in err and "Traceback" not in err


def test_missing_checkpoint(tmp_path, capsys):
    assert main(["convert-vista", "--checkpoint", str(tmp_path / "nope.pth"), "--text-model", "x",
                 "--output", str(tmp_path / "o")]) == 1
    assert "file not found" in capsys.readouterr().err
