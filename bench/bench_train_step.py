"""GCL training step vs CLIP-pairs training step on the same `GCLModel`, backbone and batch (target: ≤ 1.03 on CPU).

One step = forward of both towers + loss + backward + AdamW step. The only difference between the contenders is
``model.config.pairs``: the six GCL pairs with the default negatives (the paper's Eq. 2: one 3N×3N similarity
matrix and one log-sum-exp per row; the fused embedding ``normalize(image + text)`` reuses the two tower outputs,
so no encoder pass is added) or CLIP's two (CLIP's loss: one N×N block). The two steps alternate in one process
(ABBA order), and the headline is the median of the per-round ratios of *process CPU time* (this machine is
shared: CPU time counts only while the process runs; the wall-clock ratio is reported beside it). As a load-independent cross-check, the
loss alone (forward + backward on fixed embeddings) is timed for both pair sets; its difference over the CLIP
step predicts the ratio. ``--profile`` (or a missed target at full size) adds a torch.profiler table of each step.

    python bench/bench_train_step.py            # ViT hidden 256, 4 layers, 64 px / patch 16, batch 128
    python bench/bench_train_step.py --quick    # tiny model, batch 16
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    ModelSpec,
    common_args,
    interleave,
    machine_info,
    make_record,
    paired_ratio,
    profile_steps,
    report,
    resolve_threads,
    stats,
    write_record,
)

from gcl_hf.losses.gcl import ALL_PAIRS, CLIP_PAIRS, gcl_loss

TARGET = 1.03
PAIRS = {"gcl": [list(p) for p in ALL_PAIRS], "clip": [list(p) for p in CLIP_PAIRS]}


def make_step(model, optimizer, batch, pairs):
    def step():
        model.config.pairs = pairs
        out = model(**batch, return_loss=True)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return out.loss.detach()

    return step


def loss_only(n: int, dim: int, pairs, repeats: int) -> float:
    """Median seconds of forward + backward of the loss alone on fixed [n, dim] embeddings."""
    import time

    g = torch.Generator().manual_seed(1)
    raw = [torch.randn(n, dim, generator=g) for _ in range(2)]
    times = []
    for _ in range(repeats + 1):
        image, text = (r.clone().requires_grad_() for r in raw)
        start = time.perf_counter()
        i, t = torch.nn.functional.normalize(image, dim=-1), torch.nn.functional.normalize(text, dim=-1)
        f = torch.nn.functional.normalize(image + text, dim=-1) if any("fused" in p for p in pairs) else None
        gcl_loss(i, t, f, 50.0, pairs=pairs).backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(parser)
    parser.add_argument("--batch", type=int, default=None, help="contrastive batch (default 128; quick 16)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 12; quick 3)")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of each step")
    args = parser.parse_args()
    resolve_threads(args)
    spec = ModelSpec.tiny() if args.quick else ModelSpec()
    batch_size = args.batch or (16 if args.quick else 128)
    rounds = args.rounds or (3 if args.quick else 12)
    machine = machine_info()

    model = spec.gcl_model(seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    batch = spec.batch(batch_size, seed=0)
    steps = {name: make_step(model, optimizer, batch, pairs) for name, pairs in PAIRS.items()}
    print(f"GCL vs CLIP step: batch {batch_size}, text length {batch['input_ids'].shape[1]}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {rounds} rounds", flush=True)
    timings = interleave(steps, rounds, warmup=1)
    times = timings.wall
    ratio = paired_ratio(timings.cpu["gcl"], timings.cpu["clip"])
    wall_ratio = paired_ratio(times["gcl"], times["clip"])

    loss_gcl = loss_only(batch_size, spec.projection_dim, ALL_PAIRS, 20)
    loss_clip = loss_only(batch_size, spec.projection_dim, CLIP_PAIRS, 20)
    clip_step = statistics.median(times["clip"])
    predicted = 1 + (loss_gcl - loss_clip) / clip_step  # both wall clock, the loss timed alone

    ok = ratio["median_of_ratios"] <= TARGET
    figures = {
        "seconds_gcl_step": stats(times["gcl"]),
        "seconds_clip_step": stats(times["clip"]),
        "cpu_seconds_gcl_step": stats(timings.cpu["gcl"]),
        "cpu_seconds_clip_step": stats(timings.cpu["clip"]),
        "seconds_loss_only_fwd_bwd": {"gcl_six_pairs": loss_gcl, "clip_two_pairs": loss_clip},
        "samples_per_s": {"gcl": batch_size / statistics.median(times["gcl"]), "clip": batch_size / clip_step},
    }
    if args.profile or (not ok and not args.quick):
        figures["profile"] = profile_steps(steps)
    record = make_record(
        "train_step_gcl_vs_clip",
        quick=args.quick,
        machine=machine,
        config={"model": spec.to_dict(), "batch": batch_size, "text_tokens_padded": int(batch["input_ids"].shape[1]),
                "rounds": rounds, "optimizer": "torch.optim.AdamW(fused=True)", "fusion": "sum",
                "step": "forward + loss + backward + optimizer step"},
        figures=figures,
        ratios={"gcl_over_clip": ratio["median_of_ratios"], "gcl_over_clip_cpu_time": ratio,
                "gcl_over_clip_wall": wall_ratio, "predicted_from_loss_only": predicted},
        targets={f"gcl_over_clip<={TARGET}": ok},
    )
    report(record, {
        "GCL / CLIP step, CPU time (median of per-round ratios)": f"{ratio['median_of_ratios']:.4f} "
        f"(ratio of medians {ratio['ratio_of_medians']:.4f}, of minima {ratio['ratio_of_mins']:.4f})",
        "GCL / CLIP step, wall clock": f"{wall_ratio['median_of_ratios']:.4f} "
        f"(ratio of medians {wall_ratio['ratio_of_medians']:.4f}, of minima {wall_ratio['ratio_of_mins']:.4f})",
        "median step": f"GCL {statistics.median(times['gcl']):.3f}s, CLIP {clip_step:.3f}s",
        "loss alone (fwd+bwd)": f"six pairs {loss_gcl * 1e3:.2f} ms, two pairs {loss_clip * 1e3:.2f} ms "
        f"-> predicted ratio {predicted:.4f}",
    })
    if not args.no_write:
        write_record(record, args.out)


if __name__ == "__main__":
    main()
