"""The training-speed options work with GCLTrainer end to end (bench/README.md says which to turn on).

Dynamic padding (GCLCollator's default), the fused AdamW, bf16 autocast on CPU, torch.compile (through the
Trainer with the ``aot_eager`` backend, which traces GCLModel and its loss exactly as inductor does but skips
code generation; inductor itself is checked on the loss, forward and backward) and DataLoader workers that
decode images lazily from file paths.
"""

from __future__ import annotations

import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from gcl_hf import GCLModel
from gcl_hf.data.collator import GCLCollator
from gcl_hf.losses.gcl import gcl_loss
from gcl_hf.testing import tiny_clip, tiny_processor
from gcl_hf.training.trainer import GCLTrainer
from gcl_hf.training.arguments import GCLTrainingArguments

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
from train_dist_check import dataset



def _train(tmp_path, name, train_dataset=None, data_collator=None, **overrides) -> GCLTrainer:
    kwargs = {"output_dir": str(tmp_path / name), "per_device_train_batch_size": 4, "max_steps": 2, "learning_rate": 1e-3,
                  "lr_scheduler_type": "constant", "logging_steps": 1, "save_strategy": "no", "report_to": [], "use_cpu": True,
                  "dataloader_num_workers": 0, "seed": 0, "disable_tqdm": True}
    kwargs.update(overrides)
    trainer = GCLTrainer(GCLModel.from_backbone(tiny_clip()), GCLTrainingArguments(**kwargs),
                         train_dataset=dataset() if train_dataset is None else train_dataset,
                         processing_class=tiny_processor(), data_collator=data_collator)
    trainer.train()
    return trainer


def _losses(trainer: GCLTrainer) -> list[float]:
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def _weights(trainer: GCLTrainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_collator_pads_each_batch_to_its_longest_caption():
    processor = tiny_processor(max_length=32)
    image = Image.new("RGB", (40, 40), (200, 10, 10))
    captions = ["red", "a red square", "tiny"]
    batch = GCLCollator(processor)([{"image": image, "text": c} for c in captions])
    lengths = [len(c) + 2 for c in captions]  # byte-level tokens + BOS/EOS
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    fixed = GCLCollator(processor, padding="max_length")([{"image": image, "text": c} for c in captions])
    assert fixed["input_ids"].shape == (3, 32)
    # padding never changes the embeddings (the text tower pools at EOS under the attention mask)
    model = GCLModel.from_backbone(tiny_clip())
    torch.testing.assert_close(model.encode_text(batch["input_ids"], batch["attention_mask"]),
                               model.encode_text(fixed["input_ids"], fixed["attention_mask"]), rtol=0, atol=1e-5)


class Recorder(GCLTrainer):
    """Records, per training batch, the padded width, the longest caption and the embeddings' dtype."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mask = inputs["attention_mask"]
        self.seen.append((mask.shape[1], int(mask.sum(1).max())))
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def _recorder(tmp_path, name, **overrides) -> Recorder:
    args = GCLTrainingArguments(output_dir=str(tmp_path / name), per_device_train_batch_size=4, max_steps=2,
                                learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                                dataloader_num_workers=0, seed=0, disable_tqdm=True, **overrides)
    model = GCLModel.from_backbone(tiny_clip())
    trainer = Recorder(model, args, train_dataset=dataset(), processing_class=tiny_processor())
    trainer.seen, trainer.projection_dtypes = [], []
    for projection in (model.backbone.visual_projection, model.backbone.text_projection):
        projection.register_forward_hook(lambda module, args, out: trainer.projection_dtypes.append(out.dtype))
    trainer.train()
    return trainer


def test_trainer_pads_each_batch_to_its_longest_caption(tmp_path):
    trainer = _recorder(tmp_path, "dynamic")
    collator = getattr(trainer.data_collator, "collator", trainer.data_collator)
    assert isinstance(collator, GCLCollator) and collator.padding == "longest"
    assert len(trainer.seen) == 2
    for width, longest in trainer.seen:
        assert width == longest < collator.max_length


def test_fused_adamw_trains_like_the_foreach_adamw(tmp_path):
    fused = _train(tmp_path, "fused", optim="adamw_torch_fused")
    plain = _train(tmp_path, "foreach", optim="adamw_torch")
    optimizer = getattr(fused.optimizer, "optimizer", fused.optimizer)
    assert optimizer.defaults.get("fused") is True
    assert not getattr(plain.optimizer, "optimizer", plain.optimizer).defaults.get("fused")
    start = GCLModel.from_backbone(tiny_clip()).state_dict()
    got, ref = _weights(fused), _weights(plain)
    assert max((got[k] - start[k]).abs().max().item() for k in ref) > 1e-4  # it trained
    # Adam's m / (sqrt(v) + eps) turns rounding differences in (mathematically) zero gradients, such as the
    # attention key biases', into a visible fraction of one step: allow a tenth of a step (lr = 1e-3)
    assert max((got[k] - ref[k]).abs().max().item() for k in ref) < 1e-4
    assert _losses(fused) == pytest.approx(_losses(plain), rel=1e-5)


def test_bf16_on_cpu_runs_the_towers_in_bfloat16(tmp_path):
    trainer = _recorder(tmp_path, "bf16", bf16=True)
    assert trainer.projection_dtypes == [torch.bfloat16] * 4  # two steps x two towers
    assert _recorder(tmp_path, "fp32").projection_dtypes == [torch.float32] * 4
    losses = _losses(trainer)
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert next(trainer.model.parameters()).dtype == torch.float32  # master weights stay float32


def test_torch_compile_through_the_trainer_matches_eager(tmp_path):
    compiled = _train(tmp_path, "compiled", torch_compile=True, torch_compile_backend="aot_eager")
    eager = _train(tmp_path, "eager")
    assert type(compiled.model_wrapped).__name__ == "OptimizedModule"
    assert _losses(compiled) == pytest.approx(_losses(eager), rel=1e-5)
    got, ref = _weights(compiled), _weights(eager)
    assert max((got[k] - ref[k]).abs().max().item() for k in ref) < 1e-5


def test_inductor_compiles_the_loss_forward_and_backward():
    g = torch.Generator().manual_seed(0)
    raw = [torch.randn(8, 16, generator=g) for _ in range(3)]

    def run(fn):
        leaves = [r.clone().requires_grad_() for r in raw]
        emb = [torch.nn.functional.normalize(x, dim=-1) for x in leaves]
        loss = fn(*emb, 20.0)
        loss.backward()
        return loss.detach(), [x.grad for x in leaves]

    ref_loss, ref_grads = run(gcl_loss)
    loss, grads = run(torch.compile(gcl_loss, backend="inductor", fullgraph=True, dynamic=False))
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for got, ref in zip(grads, ref_grads):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6)


class WorkerOnlyCollator(GCLCollator):
    """Fails unless it runs in a DataLoader worker and receives undecoded image paths."""

    def __call__(self, records):
        assert torch.utils.data.get_worker_info() is not None, "collated outside a DataLoader worker"
        assert all(isinstance(r["image"], str) for r in records), "images were decoded before the collator"
        return super().__call__(records)


def _image_files(tmp_path, n=8):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = tmp_path / f"img{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    texts = [f"picture {i}: {'red' if i % 2 else 'blue'} shape" for i in range(n)]
    return datasets.Dataset.from_dict({"image": paths, "text": texts})


def test_dataloader_workers_decode_image_files_lazily(tmp_path):
    data = _image_files(tmp_path)
    workers = _train(tmp_path, "workers", train_dataset=data, data_collator=WorkerOnlyCollator(tiny_processor()),
                     dataloader_num_workers=2)
    inline = _train(tmp_path, "inline", train_dataset=data, dataloader_num_workers=0)
    assert len(_losses(workers)) == 2
    assert _losses(workers) == pytest.approx(_losses(inline), rel=1e-5)
