"""Gradient cache: the chunked step gives the one-pass gradient, replays dropout, and works in GCLTrainer."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gcl_hf import GCLModel
from gcl_hf.data.collator import GCLCollator
from gcl_hf.training.grad_cache import cached_gradient_step, split_batch
from gcl_hf.testing import tiny_clip, tiny_processor, tiny_siglip

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
from train_dist_check import dataset  # noqa: E402

N = 10


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    records = [
        {"image": Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)),
         "text": "a caption " * (i % 3 + 1) + str(i)}
        for i in range(N)
    ]
    return GCLCollator(tiny_processor())(records)


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, float]:
    assert a.keys() == b.keys()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    scale = max(g.abs().max().item() for g in a.values())
    return diff, scale


def _with_dropout(model: GCLModel, p: float) -> int:
    count = 0
    for module in model.modules():
        if isinstance(getattr(module, "dropout", None), float):  # CLIP attention dropout
            module.dropout = p
            count += 1
    return count


CASES = {
    "clip-sum": (tiny_clip, {}),
    "clip-mlp-all-negatives": (tiny_clip, {"fusion": "mlp", "negatives": "all"}),
    "clip-weighted-subset": (tiny_clip, {"pairs": [["image", "fused"], ["text", "image"]], "pair_weights": [2.0, 1.0]}),
    "siglip-sigmoid": (tiny_siglip, {"objective": "sigmoid", "fusion": "mean"}),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("chunk", [1, 3, N])
def test_cached_gradient_equals_one_pass(batch, case, chunk):
    make, overrides = CASES[case]
    model = GCLModel.from_backbone(make(), **overrides).train()
    model.zero_grad()
    out = model(**batch, return_loss=True)
    out.loss.backward()
    reference = _grads(model)

    model.zero_grad()
    cached = cached_gradient_step(model, batch, chunk)
    diff, scale = _max_diff(reference, _grads(model))
    assert diff <= 1e-5 * scale, f"{case}, chunk {chunk}: max |Δgrad| {diff:.3g} (largest gradient {scale:.3g})"
    torch.testing.assert_close(cached.loss, out.loss.detach(), rtol=1e-6, atol=1e-6)
    assert cached.pair_losses.keys() == out.pair_losses.keys()
    assert "backbone.logit_scale" in reference  # the temperature's gradient is part of the comparison
    if overrides.get("objective") == "sigmoid":
        assert "backbone.logit_bias" in reference


def test_loss_scale_and_accumulation(batch):
    model = GCLModel.from_backbone(tiny_clip()).train()
    model.zero_grad()
    cached_gradient_step(model, batch, 4)
    once = _grads(model)
    model.zero_grad()
    cached_gradient_step(model, batch, 4, loss_scale=0.5)
    cached_gradient_step(model, batch, 3, loss_scale=0.5)  # gradients accumulate into .grad
    diff, scale = _max_diff(once, _grads(model))
    assert diff <= 1e-5 * scale


def test_dropout_masks_are_replayed(batch):
    """With dropout on, the re-forward must draw the masks of the first forward: the cached gradient equals
    the exact gradient of the loss on the first-pass embeddings (chunked forward with a graph, same RNG)."""
    model = GCLModel.from_backbone(tiny_clip()).train()
    assert _with_dropout(model, 0.3) == 4

    torch.manual_seed(123)
    model.zero_grad()
    cached = cached_gradient_step(model, batch, 3)
    after_cached = torch.rand(4)
    got = _grads(model)

    torch.manual_seed(123)
    model.zero_grad()
    outs = [model(**chunk) for chunk in split_batch(batch, 3)]
    after_reference = torch.rand(4)
    cat = {m: torch.cat([getattr(o, f"{m}_embeds") for o in outs]) for m in ("image", "text", "fused")}
    loss, _ = model.loss_from_embeddings(cat["image"], cat["text"], cat["fused"], logit_scale=model.logit_scale())
    loss.backward()
    reference = _grads(model)

    torch.testing.assert_close(cached.loss, loss.detach())
    diff, scale = _max_diff(reference, got)
    assert diff <= 1e-5 * scale, f"dropout replay: max |Δgrad| {diff:.3g}"
    # replaying restores the surrounding RNG: later random draws are those of a run without the re-forward
    assert torch.equal(after_cached, after_reference)

    # and the masks matter: another seed gives another gradient (so the check above can fail)
    torch.manual_seed(124)
    model.zero_grad()
    cached_gradient_step(model, batch, 3)
    other, _ = _max_diff(reference, _grads(model))
    assert other > 1e-3 * scale


def test_no_sync_wraps_every_chunk_but_the_last(batch):
    model = GCLModel.from_backbone(tiny_clip()).train()
    entered: list[int] = []

    @contextlib.contextmanager
    def no_sync():
        entered.append(1)
        yield

    cached_gradient_step(model, batch, 3, no_sync=no_sync)  # 4 chunks: 3 without sync, the last one synced
    assert len(entered) == 3


def test_frozen_temperature_gets_no_gradient(batch):
    model = GCLModel.from_backbone(tiny_clip()).train()
    model.log_logit_scale_param.requires_grad_(False)
    cached_gradient_step(model, batch, 5)
    assert model.log_logit_scale_param.grad is None
    assert model.backbone.visual_projection.weight.grad is not None


def test_check_loss_runs_before_any_backward(batch):
    model = GCLModel.from_backbone(tiny_clip()).train()

    def refuse(loss, pair_losses):
        assert set(pair_losses) == {"image->text", "text->image", "image->fused", "fused->image",
                                    "text->fused", "fused->text"}
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        cached_gradient_step(model, batch, 3, check_loss=refuse)
    assert all(p.grad is None for p in model.parameters())


def test_split_batch():
    inputs = {"pixel_values": torch.zeros(5, 3), "input_ids": torch.zeros(5, 2), "flag": True}
    chunks = split_batch(inputs, 2)
    assert [c["pixel_values"].shape[0] for c in chunks] == [2, 2, 1] and all(c["flag"] for c in chunks)
    with pytest.raises(ValueError, match="disagree on the batch size"):
        split_batch({"pixel_values": torch.zeros(5, 3), "input_ids": torch.zeros(4, 2)}, 2)
    with pytest.raises(ValueError, match=">= 1"):
        split_batch(inputs, 0)


def _train(tmp_path, name, **overrides):
    from gcl_hf.training.trainer import GCLTrainer
    from gcl_hf.training.arguments import GCLTrainingArguments

    kwargs = dict(output_dir=str(tmp_path / name), per_device_train_batch_size=8, max_steps=2, optim="sgd",
                  learning_rate=0.5, lr_scheduler_type="constant", logging_steps=1, save_strategy="no",
                  report_to=[], use_cpu=True, dataloader_num_workers=0, seed=0, disable_tqdm=True)
    kwargs.update(overrides)
    trainer = GCLTrainer(GCLModel.from_backbone(tiny_clip()), GCLTrainingArguments(**kwargs),
                         train_dataset=dataset(), processing_class=tiny_processor())
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return trainer.model.state_dict(), losses


def test_trainer_with_gradient_cache_matches_plain_training(tmp_path):
    plain, plain_losses = _train(tmp_path, "plain")
    cached, cached_losses = _train(tmp_path, "cached", gradient_cache_chunk_size=3)
    accum, accum_losses = _train(tmp_path, "accum", per_device_train_batch_size=4, gradient_accumulation_steps=2)
    accum_cached, accum_cached_losses = _train(tmp_path, "accum_cached", per_device_train_batch_size=4,
                                               gradient_accumulation_steps=2, gradient_cache_chunk_size=3)
    initial = GCLModel.from_backbone(tiny_clip()).state_dict()
    moved = max((plain[k] - initial[k]).abs().max().item() for k in plain)
    assert moved > 1e-2
    for ref, got in ((plain, cached), (accum, accum_cached)):
        diff = max((ref[k] - got[k]).abs().max().item() for k in ref)
        assert diff < 1e-5, f"weights after 2 steps differ by {diff:.3g}"
    np.testing.assert_allclose(cached_losses, plain_losses, rtol=1e-6)
    np.testing.assert_allclose(accum_cached_losses, accum_losses, rtol=1e-6)
    # accumulation is not a larger contrastive batch: 4-pair micro-batches have fewer negatives
    assert abs(accum_losses[0] - plain_losses[0]) > 1e-3
