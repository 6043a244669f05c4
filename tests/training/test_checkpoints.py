"""Checkpoints are marked complete only once every file is written; resume never picks a half-written one; model
weights are read from safetensors only unless allow_pickle; no token in what a run writes."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gcl_hf import GCLModel
from gcl_hf.modeling.loading import UnsafeWeightsError
from gcl_hf.testing import tiny_clip, tiny_processor
from gcl_hf.training.arguments import GCLTrainingArguments
from gcl_hf.training.checkpoints import MARKER, checkpoint_problem, last_complete_checkpoint
from gcl_hf.training.trainer import GCLTrainer

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
from train_dist_check import dataset  # noqa: E402

TOKEN = "hf_CheckpointTokenNeverWritten0123456789"



def _trainer(out: Path, **overrides) -> GCLTrainer:
    kwargs = dict(output_dir=str(out), per_device_train_batch_size=4, max_steps=6, learning_rate=5e-3,
                  save_strategy="steps", save_steps=2, logging_steps=1, report_to=[], use_cpu=True,
                  dataloader_num_workers=0, seed=0, disable_tqdm=True)
    kwargs.update(overrides)
    return GCLTrainer(GCLModel.from_backbone(tiny_clip(seed=0)), GCLTrainingArguments(**kwargs),
                      train_dataset=dataset(), processing_class=tiny_processor())


def _losses(trainer: GCLTrainer) -> dict[int, float]:
    return {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A 6-step run with checkpoints 2, 4, 6, and its losses; tests copy it before breaking it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    trainer = _trainer(out)
    trainer.train()
    return out, _losses(trainer)


def _copy(finished, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished[0], out)
    return out


def test_each_checkpoint_has_a_marker_listing_its_files(finished):
    out, _ = finished
    for step in (2, 4, 6):
        directory = out / f"checkpoint-{step}"
        marker = json.loads((directory / MARKER).read_text())
        assert marker["step"] == step
        files = marker["files"]
        assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= set(files)
        assert all((directory / name).stat().st_size == size for name, size in files.items())
        assert checkpoint_problem(directory) is None


def _drop_marker(directory: Path) -> str:
    (directory / MARKER).unlink()
    return MARKER


def _drop_optimizer(directory: Path) -> str:
    (directory / "optimizer.pt").unlink()
    return "optimizer.pt"


def _truncate_weights(directory: Path) -> str:
    path = directory / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    return "model.safetensors"


def _drop_state(directory: Path) -> str:
    (directory / "trainer_state.json").unlink()
    (directory / MARKER).unlink()
    return MARKER


BREAKS = [_drop_marker, _drop_optimizer, _truncate_weights, _drop_state]


@pytest.mark.parametrize("breaks", BREAKS, ids=lambda f: f.__name__)
def test_resume_last_skips_a_half_written_checkpoint(finished, tmp_path, caplog, breaks):
    out = _copy(finished, tmp_path)
    named = breaks(out / "checkpoint-6")
    assert named in checkpoint_problem(out / "checkpoint-6")
    assert last_complete_checkpoint(out)[0] == str(out / "checkpoint-4")
    trainer = _trainer(out)
    with caplog.at_level(logging.WARNING, logger="gcl_hf.training.checkpoints"):
        trainer.train(resume_from_checkpoint=True)
    assert "checkpoint-6" in caplog.text and named in caplog.text
    assert trainer.resumed_from == str(out / "checkpoint-4")
    reference = finished[1]
    for step in (5, 6):  # trained again from checkpoint-4, to the same losses
        assert _losses(trainer)[step] == pytest.approx(reference[step], rel=1e-6, abs=1e-7)
    assert checkpoint_problem(out / "checkpoint-6") is None  # written again, completely


def test_resume_accepts_last_as_a_string(finished, tmp_path):
    out = _copy(finished, tmp_path)
    _drop_marker(out / "checkpoint-6")
    trainer = _trainer(out)
    trainer.train(resume_from_checkpoint="last")  # what `gcl-hf train --resume_from_checkpoint last` passes
    assert trainer.resumed_from == str(out / "checkpoint-4")


def test_an_explicit_half_written_checkpoint_is_refused(finished, tmp_path):
    out = _copy(finished, tmp_path)
    _drop_optimizer(out / "checkpoint-6")
    with pytest.raises(ValueError, match=r"checkpoint-6.*optimizer\.pt"):
        _trainer(out).train(resume_from_checkpoint=str(out / "checkpoint-6"))


def test_no_complete_checkpoint_is_an_error_naming_each(finished, tmp_path):
    out = _copy(finished, tmp_path)
    for step in (2, 4, 6):
        _drop_marker(out / f"checkpoint-{step}")
    with pytest.raises(ValueError, match=r"no complete checkpoint.*checkpoint-6.*checkpoint-4.*checkpoint-2"):
        _trainer(out).train(resume_from_checkpoint=True)


def test_save_total_limit_rotates_only_complete_checkpoints(tmp_path):
    out = tmp_path / "run"
    _trainer(out, save_total_limit=1).train()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-6"]
    assert checkpoint_problem(out / "checkpoint-6") is None


def test_pickle_model_weights_are_refused_on_resume_unless_allowed(finished, tmp_path):
    """A checkpoint from elsewhere (no marker) whose weights are a pickle: refused unless allow_pickle=True."""
    out = _copy(finished, tmp_path)
    directory = out / "checkpoint-4"
    _drop_marker(directory)
    torch.save(load_file(directory / "model.safetensors"), directory / "pytorch_model.bin")
    (directory / "model.safetensors").unlink()
    with pytest.raises(UnsafeWeightsError, match=r"checkpoint-4.*pytorch_model\.bin.*allow_pickle"):
        _trainer(out).train(resume_from_checkpoint=str(directory))
    trainer = _trainer(out, allow_pickle=True)
    trainer.train(resume_from_checkpoint=str(directory))
    assert _losses(trainer)[6] == pytest.approx(finished[1][6], rel=1e-6, abs=1e-7)


def test_hub_token_is_never_written_nor_shown(tmp_path, caplog):
    out = tmp_path / "run"
    caplog.set_level(logging.DEBUG)
    trainer = _trainer(out, max_steps=2, hub_token=TOKEN)
    trainer.train()
    trainer.save_model()
    assert trainer.args.hub_token == TOKEN  # still usable for a push
    for shown in (repr(trainer.args), str(trainer.args), trainer.args.to_json_string(), caplog.text):
        assert TOKEN not in shown
    written = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "training_args.bin" for p in written)
    leaks = [str(p.relative_to(out)) for p in written if TOKEN.encode() in p.read_bytes()]
    assert not leaks, f"the Hub token was written into {leaks}"
    saved = torch.load(out / "training_args.bin", weights_only=False)
    assert saved.hub_token is None and saved.learning_rate == trainer.args.learning_rate


def test_cli_resumes_from_the_last_complete_checkpoint_and_writes_no_token(tmp_path, caplog, capsys):
    """`gcl-hf train --resume_from_checkpoint last` (a string, as every command-line value is), with --hub_token."""
    import numpy as np
    from PIL import Image

    from gcl_hf.cli.train import main

    model_dir = tmp_path / "tiny-clip"
    tiny_clip().save_pretrained(model_dir)
    tiny_processor().save_pretrained(model_dir)
    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(0)
    records = []
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
        records.append({"image": f"{i}.png", "conversations": [{"from": "human", "value": "<image>"},
                                                               {"from": "gpt", "value": f"thing number {i}"}]})
    data = tmp_path / "pairs.json"
    data.write_text(json.dumps(records))
    out = tmp_path / "out"
    flags = ["--model_name_or_path", str(model_dir), "--train_data", str(data), "--image_root",
             str(tmp_path / "images"), "--output_dir", str(out), "--per_device_train_batch_size", "4", "--max_steps",
             "4", "--save_steps", "2", "--use_cpu", "--report_to", "none", "--logging_steps", "1",
             "--dataloader_num_workers", "0", "--hub_token", TOKEN, "--save_backbone", "false"]
    caplog.set_level(logging.INFO)
    assert main(flags) == 0
    _drop_optimizer(out / "checkpoint-4")  # as if killed while saving it
    assert main(flags + ["--resume_from_checkpoint", "last"]) == 0
    assert f"resuming from {out / 'checkpoint-2'}" in caplog.text and "not resuming from" in caplog.text
    printed = "".join(capsys.readouterr())
    assert TOKEN not in printed and TOKEN not in caplog.text
    leaks = [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert not leaks, f"the Hub token was written into {leaks}"


def _resume_with(tmp_path, finished, backbone, resume):
    out = _copy(finished, tmp_path)
    trainer = GCLTrainer(GCLModel.from_backbone(backbone), GCLTrainingArguments(
        output_dir=str(out), per_device_train_batch_size=4, max_steps=8, report_to=[], use_cpu=True, seed=0,
        save_strategy="no", disable_tqdm=True), train_dataset=dataset(), processing_class=tiny_processor())
    return trainer.train(resume_from_checkpoint=resume(out))


def test_resuming_another_models_checkpoint_is_refused(finished, tmp_path):
    """Resuming model A's checkpoint with ``--model B`` used to continue A silently."""
    from gcl_hf.training.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match=r"checkpoint-6: continues a run that started from another model "
                                              r"\(CLIPModel, other weights\)"):
        _resume_with(tmp_path, finished, tiny_clip(seed=1), lambda out: "last")


def test_resuming_another_architectures_checkpoint_is_refused(finished, tmp_path):
    from gcl_hf.training.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match=r"checkpoint-4: a checkpoint of another architecture \(CLIPModel\)"):
        _resume_with(tmp_path, finished, tiny_clip(seed=0, layers=1),
                     lambda out: str(out / "checkpoint-4"))


def test_resuming_from_a_folder_that_is_not_a_checkpoint_says_so(finished, tmp_path):
    from gcl_hf.training.checkpoints import CheckpointError

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    with pytest.raises(CheckpointError, match=r"notes is not a training checkpoint \(no gcl_checkpoint\.json nor "
                                              r"trainer_state\.json\)"):
        _resume_with(tmp_path, finished, tiny_clip(seed=0), lambda out: str(tmp_path / "notes"))
    assert issubclass(CheckpointError, OSError)  # the command line prints it as one line


def test_resuming_the_same_model_still_works(finished, tmp_path):
    _resume_with(tmp_path, finished, tiny_clip(seed=0), lambda out: "last")
