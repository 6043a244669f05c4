"""`gcl-hf train` from a new user's side: required flags, one-line failures (a bad image in a dataloader worker,
LoRA targets that match nothing, a model that is not there offline) and an adapter that loads from anywhere."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from gcl_hf import cli
from gcl_hf.testing import tiny_clip, tiny_processor


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A relative tiny model directory ``tiny-clip`` and an LCS-558K-style JSON list, in the working directory."""
    monkeypatch.chdir(tmp_path)
    tiny_clip().save_pretrained("tiny-clip")
    tiny_processor().save_pretrained("tiny-clip")
    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(0)
    records = []
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
        records.append({"id": str(i), "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": f"picture number {i}"}]})
    (tmp_path / "pairs.json").write_text(json.dumps(records))
    return tmp_path


def _flags(out: str, *extra: str) -> list[str]:
    return ["train", "--model", "tiny-clip", "--train_data", "pairs.json", "--image_root", "images",
            "--output_dir", out, "--per_device_train_batch_size", "4", "--max_steps", "1", "--use_cpu",
            "--report_to", "none", "--save_strategy", "no", "--dataloader_num_workers", "0", *extra]


def _error_line(capsys, prog: str = "gcl-hf train") -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_output_dir_is_required(workspace, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--model", "tiny-clip", "--train_data", "pairs.json"])
    assert exit_.value.code == 2
    assert "--output_dir is required" in _error_line(capsys)
    assert not (workspace / "trainer_output").exists()


def test_help_is_gcl_hfs_own_and_names_resume_last(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--resume_from_checkpoint DIR|last" in out and "Not directly used" not in out
    assert "--help-all" in out and "(default: train)" in " ".join(out.split())


def test_lora_adapter_records_an_absolute_base_and_loads_from_elsewhere(workspace, tmp_path_factory, monkeypatch):
    from gcl_hf import hub

    flags = [f for f in _flags("out", "--lora_r", "2") if f != "--use_cpu"]  # a machine without CUDA as it is
    assert cli.main(flags) == 0
    config = json.loads((workspace / "out" / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(workspace / "tiny-clip")
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    model = hub.load(str(workspace / "out" / "adapter"))  # the base resolves from any directory
    assert model.embedding_dim > 0


def test_lora_targets_that_match_nothing_are_one_line(workspace, capsys):
    assert cli.main(_flags("out", "--lora_r", "2", "--lora_target_modules", "query,value")) == 1
    line = _error_line(capsys)
    assert "--lora_target_modules: LoRA target modules query,value match no module" in line
    assert "q_proj" in line and "fc1" in line  # the model's own linear layers


def test_a_bad_image_in_a_dataloader_worker_names_row_and_path(workspace, capsys):
    (workspace / "images" / "3.png").write_bytes(b"not a png")
    flags = [f for f in _flags("out") if f not in ("--dataloader_num_workers", "0")]
    assert cli.main([*flags, "--dataloader_num_workers", "1"]) == 1
    line = _error_line(capsys)
    assert "3.png" in line and "worker" not in line, line
    assert "__index__ 3" in line, line  # the dataset row, across the worker boundary


def test_an_uncached_model_offline_names_it_and_the_cache(workspace, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    flags = _flags("out")
    flags[flags.index("tiny-clip")] = "someone/not-cached-clip"
    assert cli.main(flags) == 1
    line = _error_line(capsys)
    assert "someone/not-cached-clip" in line and "cache" in line


def test_the_mean_loss_after_a_resume_covers_the_whole_run(workspace, capsys):
    flags = [f for f in _flags("out") if f not in ("--max_steps", "1", "--save_strategy", "no")]
    common = [*flags, "--logging_steps", "1", "--save_strategy", "steps", "--save_steps", "2", "--seed", "0"]
    assert cli.main([*common, "--max_steps", "4"]) == 0
    state = json.loads((workspace / "out" / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert len(losses) == 4
    capsys.readouterr()
    # run 2: resume at step 2 of the same schedule, in a fresh output dir holding only that checkpoint
    import shutil

    shutil.copytree(workspace / "out" / "checkpoint-2", workspace / "again" / "checkpoint-2")
    flags2 = [f if f != "out" else "again" for f in common]
    assert cli.main([*flags2, "--max_steps", "4", "--resume_from_checkpoint", "last"]) == 0
    printed = capsys.readouterr().out
    mean = float(printed.split("done (")[1].split(" mean loss")[0])
    assert mean == pytest.approx(sum(losses) / 4, abs=1e-3)  # all four steps, not the two resumed ones


def test_whole_run_loss_weights_the_logged_windows():
    from gcl_hf.training.reports import whole_run_loss

    history = [{"loss": 4.0, "step": 2}, {"loss": 2.0, "step": 3}, {"loss": 9.0, "step": 5}]
    assert whole_run_loss(history, 1.0, start_step=3, final_step=5) == pytest.approx((4 * 2 + 2 + 1 * 2) / 5)


def test_mteb_names_a_local_model_by_its_directory_not_a_relative_path(workspace):
    from gcl_hf import GCLModel
    from gcl_hf.integrations.mteb import gcl_model_meta

    GCLModel.from_backbone(tiny_clip()).save_pretrained("runs/gcl")
    assert gcl_model_meta("runs/gcl").name == "gcl-hf/gcl"


def test_a_lora_run_prints_no_known_noise(workspace, capsys, recwarn):
    flags = [f for f in _flags("out", "--lora_r", "2") if f != "--use_cpu"]  # a machine without CUDA as it is
    assert cli.main(flags) == 0
    err = capsys.readouterr().err
    messages = [str(w.message) for w in recwarn] + [err]
    assert not any("is_gradient_checkpointing" in m or "pin_memory" in m for m in messages), messages


def test_check_images_choices_are_the_parsers_vocabulary():
    import dataclasses

    from gcl_hf.cli.train import DataArguments
    from gcl_hf.data.validation import CHECK_IMAGES, parse_check_images

    field = next(f for f in dataclasses.fields(DataArguments) if f.name == "check_images")
    choices = field.metadata["choices"]
    assert set(CHECK_IMAGES) <= set(choices) and {parse_check_images(c) for c in choices} == set(CHECK_IMAGES)


def test_data_errors_choices_are_the_errors_vocabulary():
    import dataclasses

    from gcl_hf.cli.train import DataArguments
    from gcl_hf.errors import ERRORS_MODES

    field = next(f for f in dataclasses.fields(DataArguments) if f.name == "data_errors")
    assert tuple(field.metadata["choices"]) == ERRORS_MODES
