"""The non-finite guard: a NaN/inf loss *or gradient* stops training before the optimizer step, on every process,
naming the step, the pairs or parameters, and the batch's records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import TrainerCallback

from gcl_hf import GCLModel
from gcl_hf.testing import tiny_clip, tiny_processor
from gcl_hf.training.arguments import GCLTrainingArguments
from gcl_hf.training.guard import NonFiniteGradientError, NonFiniteLossError
from gcl_hf.training.trainer import GCLTrainer

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "scripts" / "guard_dist_check.py"



def _dataset(n=16):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]
    features = datasets.Features({"id": datasets.Value("string"), "image": datasets.Image(),
                                  "text": datasets.Value("string")})
    return datasets.Dataset.from_dict({"id": [f"pair-{i}" for i in range(n)], "image": images,
                                       "text": [f"picture {i}" for i in range(n)]}, features=features)


def _args(tmp_path, **overrides) -> GCLTrainingArguments:
    kwargs = dict(output_dir=str(tmp_path / "run"), per_device_train_batch_size=4, max_steps=3, learning_rate=1e-3,
                  logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0,
                  seed=0, disable_tqdm=True)
    kwargs.update(overrides)
    return GCLTrainingArguments(**kwargs)


class _PoisonVisionGradient(TrainerCallback):
    """From step ``at`` on, the gradient flowing out of the vision projection is NaN, but only in passes that
    build a graph: the forward pass and the loss stay finite. With the gradient cache, that is exactly the
    re-embedding pass (the first pass runs without autograd). Records the weights after each step."""

    def __init__(self, model: GCLModel, at: int):
        self.at, self.armed, self.snapshots = at, False, {}
        model.backbone.visual_projection.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        if self.armed and torch.is_grad_enabled():
            output.register_hook(lambda grad: torch.full_like(grad, float("nan")))
        return output

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self.armed = state.global_step + 1 >= self.at

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.snapshots[state.global_step] = {k: v.detach().clone() for k, v in model.state_dict().items()}


def _unchanged_since(trainer: GCLTrainer, snapshot: dict) -> float:
    return max((v - snapshot[k]).abs().max().item() for k, v in trainer.model.state_dict().items())


@pytest.mark.parametrize("max_grad_norm", [1.0, 0.0], ids=["clipped", "unclipped"])
def test_nan_gradient_in_the_gradient_cache_re_embedding_pass_stops_before_the_update(tmp_path, max_grad_norm):
    model = GCLModel.from_backbone(tiny_clip())
    poison = _PoisonVisionGradient(model, at=2)
    trainer = GCLTrainer(model, _args(tmp_path, gradient_cache_chunk_size=2, max_grad_norm=max_grad_norm),
                         train_dataset=_dataset(), processing_class=tiny_processor(), callbacks=[poison])
    with pytest.raises(NonFiniteGradientError) as info:
        trainer.train()
    error, message = info.value, str(info.value)
    assert error.step == 2 and "training step 2" in message
    # the NaN enters at the vision projection's output: that layer and everything below it in the vision tower
    assert error.parameters[0] == "backbone.visual_projection.weight" and error.parameters[0] in message
    assert all(name.startswith(("backbone.vision_model.", "backbone.visual_projection.")) for name in error.parameters)
    assert f"{len(error.parameters)} of " in message
    assert "loss was finite" in message and "before this update" in message
    assert trainer.state.global_step == 1
    assert _unchanged_since(trainer, poison.snapshots[1]) == 0.0  # the NaN gradient was never applied
    assert len(error.record_ids) == 4 and all(r.startswith("pair-") for r in error.record_ids)
    assert all(repr(r) in message for r in error.record_ids)


def test_nan_gradient_without_gradient_cache_is_caught_too(tmp_path):
    model = GCLModel.from_backbone(tiny_clip())
    poison = _PoisonVisionGradient(model, at=2)
    trainer = GCLTrainer(model, _args(tmp_path, max_grad_norm=0.0), train_dataset=_dataset(),
                         processing_class=tiny_processor(), callbacks=[poison])
    with pytest.raises(NonFiniteGradientError, match="training step 2"):
        trainer.train()
    assert _unchanged_since(trainer, poison.snapshots[1]) == 0.0


def test_nan_loss_names_the_batch_records(tmp_path):
    class PoisonFusionHead(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            if state.global_step + 1 == 2:
                model.fusion_head.fc2.weight.data.fill_(float("nan"))

    trainer = GCLTrainer(GCLModel.from_backbone(tiny_clip(), fusion="mlp"), _args(tmp_path, negatives="modality"),
                         train_dataset=_dataset(), processing_class=tiny_processor(), callbacks=[PoisonFusionHead()])
    with pytest.raises(NonFiniteLossError) as info:
        trainer.train()
    assert info.value.step == 2 and "image->fused" in info.value.pairs
    assert len(info.value.record_ids) == 4 and all(repr(r) in str(info.value) for r in info.value.record_ids)


def test_gradient_accumulation_names_every_micro_batch(tmp_path):
    model = GCLModel.from_backbone(tiny_clip())
    poison = _PoisonVisionGradient(model, at=2)
    trainer = GCLTrainer(model, _args(tmp_path, per_device_train_batch_size=2, gradient_accumulation_steps=2),
                         train_dataset=_dataset(), processing_class=tiny_processor(), callbacks=[poison])
    with pytest.raises(NonFiniteGradientError) as info:
        trainer.train()
    assert info.value.step == 2 and len(set(info.value.record_ids)) == 4
    assert _unchanged_since(trainer, poison.snapshots[1]) == 0.0


def test_guard_off_trains_through(tmp_path):
    model = GCLModel.from_backbone(tiny_clip())
    poison = _PoisonVisionGradient(model, at=2)
    trainer = GCLTrainer(model, _args(tmp_path, max_steps=2, nan_guard=False, max_grad_norm=0.0),
                         train_dataset=_dataset(), processing_class=tiny_processor(), callbacks=[poison])
    trainer.train()
    assert torch.isnan(trainer.model.backbone.visual_projection.weight).all()


# ---------------------------------------------------------------------------------------------- two processes
def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", TRANSFORMERS_VERBOSITY="error",
                ACCELERATE_USE_CPU="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def test_one_bad_rank_stops_both_processes_before_the_update(tmp_path):
    """torchrun, 2 CPU processes: only rank 1's gradient turns NaN (after DDP's all-reduce, so rank 0's own
    gradients stay finite); both processes must stop at the same step with the weights of the step before."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT),
           str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env(), cwd=ROOT)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank, result in enumerate(results):
        assert result["error"] == "NonFiniteGradientError", result
        assert result["step"] == 2 and result["global_step"] == 1, result
        assert result["weights_changed_since_step_1"] == 0.0, result
        assert f"on process {rank}" in result["message"]
        assert result["ddp_modules_alive"] == 0 and result["group_alive"] is False, result
    assert results[1]["parameters"] == ["backbone.visual_projection.weight"]
    assert results[0]["parameters"] == [] and "another process" in results[0]["message"]
