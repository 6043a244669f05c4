"""Training figures: GCLTrainer with the speed switches vs a naive loop, the GCL / CLIP-pairs step, and the
gradient cache at a large contrastive batch. The loops themselves are the CPU benches' (imported from
`bench_train_throughput.py`, `bench_train_step.py`, `bench_grad_cache.py`); this module sizes and times them."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import torch

from common import interleave, paired_ratio, peak_memory_mib, stats
from gpu.models import Case, make_batch
from gpu.runner import Context, figure

THROUGHPUT_TARGET = 2.0
STEP_TARGET = 1.01
GRAD_CACHE_TIME_TARGET = 1.35


def throughput(ctx: Context, case: Case) -> Iterator[dict[str, Any]]:
    """GCLTrainer (dynamic padding, torch_compile, fused AdamW, bf16, dataloader workers) vs the naive eager loop
    (77-token padding, bf16 autocast, plain AdamW), same model and batch; samples/s ratio (A B A order)."""
    from bench_train_throughput import FIXED_LENGTH, Captions, run_naive, run_trainer

    spec = case.spec
    batch = ctx.size(1024, 8)
    warmup, steps = ctx.size(5, 1), ctx.size(15, 2)
    workers = ctx.size(4, 1)
    backend = ctx.size("inductor", "eager")  # the dry run exercises torch_compile=True without a compiler
    config = spec.clip_config()
    config.text_config.max_position_embeddings = max(config.text_config.max_position_embeddings, FIXED_LENGTH)
    side = config.vision_config.image_size
    bank = torch.randn(batch, 3, side, side, device=ctx.device)
    data = Captions(batch * (warmup + steps + 1), batch, config.text_config, spec.caption_tokens)
    naive = run_naive(config, bank, data, batch, steps, warmup, ctx.device)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        ours, speed = run_trainer(config, bank, data, batch, steps, warmup, ctx.device, backend, tmp, workers=workers)
        trainer_total = time.perf_counter() - start
    naive += run_naive(config, bank, data, batch, steps, warmup, ctx.device)
    sps_naive, sps_ours = batch / statistics.median(naive), batch / statistics.median(ours)
    ratio = sps_ours / sps_naive
    yield figure(f"throughput/{case.name}", ratio, "x", ratio=ratio, target=f">= {THROUGHPUT_TARGET}",
                 passed=ratio >= THROUGHPUT_TARGET, reference="2.07 (hand-written H100 reference)", model=case.label,
                 config={"batch": batch, "warmup_steps": warmup, "timed_steps": steps, "caption_tokens_mean":
                         spec.caption_tokens, "naive": "eager CLIPModel, 77-token padding, bf16 autocast, "
                         "torch.optim.AdamW defaults, hand-written six-pair loss, collation in the main process",
                         "gcl_trainer": {**speed, "padding": "longest in batch"},
                         "images": "device-resident bank of ready pixels (both)"},
                 details={"samples_per_s": {"naive": sps_naive, "gcl_trainer": sps_ours},
                          "seconds_per_step": {"naive": stats(naive), "gcl_trainer": stats(ours)},
                          "trainer_setup_and_warmup_s": trainer_total - sum(ours)})


def step_ratio(ctx: Context, case: Case, batch_size: int) -> Iterator[dict[str, Any]]:
    """GCL step (six pairs; Eq. 2, or the sigmoid objective for SigLIP) / CLIP-pairs step, same model, batch,
    fused AdamW, bf16 autocast, eager; paired rounds in ABBA order."""
    from bench_train_step import PAIRS, make_step

    model = case.gcl_model(ctx.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    batch = make_batch(case, batch_size, ctx.device)
    steps = {name: make_step(model, optimizer, batch, pairs) for name, pairs in PAIRS.items()}

    def autocast(step):
        def run():
            with ctx.autocast():
                return step()
        return run

    rounds = ctx.size(8, 2)
    ctx.peak_reset()
    timings = interleave({n: autocast(s) for n, s in steps.items()}, rounds, warmup=ctx.size(2, 1),
                         device=ctx.device, verbose=False)
    ratio = paired_ratio(timings.wall["gcl"], timings.wall["clip"])
    value = ratio["median_of_ratios"]
    own_fusion = model.config.fusion == "backbone"  # VISTA: fused items are a third encoder pass, not a sum
    target = ("report (fusion='backbone': the fused embedding is its own encoder pass)" if own_fusion
              else f"<= {STEP_TARGET}")
    yield figure(f"step_ratio/{case.name}", value, "x", ratio=value, target=target,
                 passed=None if own_fusion else value <= STEP_TARGET, model=case.label,
                 config={"batch": batch_size, "text_tokens_padded": int(batch["input_ids"].shape[1]),
                         "objective": model.config.objective, "rounds": rounds,
                         "step": "forward + loss + backward + AdamW(fused) step, bf16 autocast, eager"},
                 details={"seconds_gcl": stats(timings.wall["gcl"]), "seconds_clip": stats(timings.wall["clip"]),
                          "ratio": ratio, "max_memory_gib": _max_memory_gib(ctx)})


def grad_cache(ctx: Context, case: Case) -> Iterator[dict[str, Any]]:
    """Gradient cache at a large contrastive batch vs the plain step at an 8x smaller one: peak memory (above the
    weights, inputs and optimizer state) and time per sample of forward + loss + backward (bf16 autocast)."""
    from bench_grad_cache import fwd_bwd

    large, small, chunk = ctx.size(8192, 32), ctx.size(1024, 4), ctx.size(512, 8)
    model = case.gcl_model(ctx.device)
    batches = {"plain": make_batch(case, small, ctx.device, seed=1), "cached": make_batch(case, large, ctx.device)}

    def step(mode):
        def run():
            model.zero_grad(set_to_none=True)
            with ctx.autocast():
                fwd_bwd(model, batches[mode], chunk if mode == "cached" else None)
        return run

    contenders = {mode: step(mode) for mode in batches}
    for run in contenders.values():  # warm-up (cuBLAS handles, allocator)
        run()
    memory = {}
    for mode, run in contenders.items():
        model.zero_grad(set_to_none=True)
        ctx.peak_reset()
        memory[mode] = peak_memory_mib(run)
        memory[mode]["max_allocated_gib"] = _max_memory_gib(ctx)
    timings = interleave(contenders, ctx.size(3, 1), warmup=0, device=ctx.device, verbose=False)
    per_sample = paired_ratio([t / large for t in timings.wall["cached"]], [t / small for t in timings.wall["plain"]])
    # (the dry run's CPU figure is the in-process resident-set peak, which glibc's reuse can leave at 0: clamped)
    mem_ratio = max(memory["cached"]["peak_mib"], 0.01) / max(memory["plain"]["peak_mib"], 0.01)
    config = {"large_batch": large, "small_batch": small, "chunk": chunk, "memory": memory["plain"]["method"] +
              " minus the allocation before the step (weights, inputs, optimizer state excluded)",
              "step": "forward + loss + backward (no optimizer step), bf16 autocast"}
    details = {"memory": memory, "seconds_plain": stats(timings.wall["plain"]),
               "seconds_cached": stats(timings.wall["cached"])}
    yield figure(f"grad_cache_memory/{case.name}", mem_ratio, "x", ratio=mem_ratio,
                 target=f"< 1 (cached @{large} below plain @{small})", passed=mem_ratio < 1, model=case.label,
                 config=config, details=details)
    value = per_sample["median_of_ratios"]
    yield figure(f"grad_cache_time/{case.name}", value, "x", ratio=value,
                 target=f"<= {GRAD_CACHE_TIME_TARGET} (time per sample, cached @{large} / plain @{small})",
                 passed=value <= GRAD_CACHE_TIME_TARGET, model=case.label, config=config,
                 details={**details, "per_sample_ratio": per_sample})


def _max_memory_gib(ctx: Context) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if ctx.on_gpu else None
