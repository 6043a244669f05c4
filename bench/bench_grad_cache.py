"""Gradient cache (`gcl_hf.training.grad_cache.cached_gradient_step`, chunk 64) vs the plain one-pass step.

Targets: peak memory of the cached step at contrastive batch 512 ≤ 1.3× the peak at batch 64 (the plain step
grows about linearly with the batch); its time ≤ 1.35× the plain step at batch 512; the same gradients.

Memory: each configuration (plain / cached × batch 64 / 512) runs in a *fresh* Python process with glibc's
mmap threshold fixed (``MALLOC_MMAP_THRESHOLD_``, so freed tensors leave the resident set). The process builds
the model and the batch, warms up with a batch-8 step, drops the gradients, then resets the kernel's peak-RSS
mark (``/proc/self/clear_refs``) and measures the peak resident memory of one forward + loss + backward above
the resident memory just before it (`bench/common.py: peak_memory_mib`). That is activations, the gradient
buffers and temporaries; the weights, the inputs and the optimizer state (batch-independent) are excluded.

Time and gradients: in this process, the plain and cached steps (forward + loss + backward + AdamW step) at
batch 512 alternate; the gradients of both from the same weights are compared first. The time ratio is the
median of per-round ratios of process CPU time (the machine is shared), the wall-clock ratio beside it.

    python bench/bench_grad_cache.py           # hidden 256 / 4 layers model, batches 64 and 512, chunk 64
    python bench/bench_grad_cache.py --quick   # tiny model, batches 8 and 64, chunk 8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    ModelSpec,
    common_args,
    grad_diff,
    interleave,
    machine_info,
    make_record,
    memory_env,
    paired_ratio,
    peak_memory_mib,
    profile_steps,
    report,
    resolve_threads,
    run_json,
    set_threads,
    stats,
    write_record,
)

from gcl_hf.training.grad_cache import cached_gradient_step

MEMORY_TARGET = 1.3
TIME_TARGET = 1.35
GRAD_TOL = 1e-5  # ||all gradient differences|| / ||all gradients||


def fwd_bwd(model, batch, chunk: int | None) -> None:
    """Forward + GCL loss + backward of the whole batch, in one pass or through the gradient cache."""
    if chunk:
        cached_gradient_step(model, batch, chunk)
    else:
        model(**batch, return_loss=True).loss.backward()


def measure_memory(spec: ModelSpec, mode: str, n: int, chunk: int, threads: int) -> dict:
    """(In a fresh process) peak memory and time of one forward + backward at batch ``n``."""
    set_threads(threads)
    model = spec.gcl_model(seed=0)
    batch = spec.batch(n, seed=0)
    use_chunk = chunk if mode == "cached" else None
    fwd_bwd(model, spec.batch(8, seed=1), min(use_chunk, 8) if use_chunk else None)  # warm-up (lazy state)
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    mem = peak_memory_mib(lambda: fwd_bwd(model, batch, use_chunk))
    mem["seconds"] = time.perf_counter() - start
    mem.update(mode=mode, batch=n, chunk=use_chunk)
    return mem


def grads(model) -> dict[str, torch.Tensor]:
    return {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(parser)
    parser.add_argument("--chunk", type=int, default=None, help="gradient-cache chunk (default 64; quick 8)")
    parser.add_argument("--small", type=int, default=None, help="the small batch (default 64; quick 8)")
    parser.add_argument("--large", type=int, default=None, help="the large batch (default 512; quick 64)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds at the large batch (default 3)")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler tables of both steps")
    parser.add_argument("--jobs", type=int, default=None,
                        help="memory processes run at once (default 1; quick 4): each measures only itself")
    parser.add_argument("--measure-memory", nargs=2, metavar=("MODE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    resolve_threads(args)
    spec = ModelSpec.tiny() if args.quick else ModelSpec()
    chunk = args.chunk or (8 if args.quick else 64)
    small = args.small or (8 if args.quick else 64)
    large = args.large or (64 if args.quick else 512)
    rounds = args.rounds or (1 if args.quick else 3)
    jobs = args.jobs or (4 if args.quick else 1)

    if args.measure_memory:  # child process
        mode, n = args.measure_memory
        print(json.dumps(measure_memory(spec, mode, int(n), chunk, args.threads)))
        return

    resolve_threads(args)
    machine = machine_info()
    # ---- memory, one fresh process per configuration
    configs = [(mode, n) for mode in ("plain", "cached") for n in (small, large)]

    def child(config):
        mode, n = config
        cmd = [sys.executable, __file__, "--measure-memory", mode, str(n), "--chunk", str(chunk),
               "--threads", str(args.threads)] + (["--quick"] if args.quick else [])
        return run_json(cmd, env=memory_env())

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(jobs) as pool:
        memory = {f"{mode}_{n}": m for (mode, n), m in zip(configs, pool.map(child, configs))}
    for (mode, n) in configs:
        m = memory[f"{mode}_{n}"]
        print(f"  memory {mode:6s} batch {n:4d}: peak +{m['peak_mib']:.1f} MiB above resting "
              f"{m.get('rss_before_mib', 0):.0f} MiB ({m['seconds']:.1f}s)", flush=True)
    peak = {k: v["peak_mib"] for k, v in memory.items()}
    mem_ratio = peak[f"cached_{large}"] / peak[f"plain_{small}"]
    mem_ratio_cached = peak[f"cached_{large}"] / peak[f"cached_{small}"]
    plain_growth = peak[f"plain_{large}"] / peak[f"plain_{small}"]

    # ---- gradients: both paths from the same weights
    model = spec.gcl_model(seed=0)
    batch = spec.batch(large, seed=0)
    fwd_bwd(model, batch, None)
    reference = grads(model)
    model.zero_grad(set_to_none=True)
    fwd_bwd(model, batch, chunk)
    cached = grads(model)
    model.zero_grad(set_to_none=True)
    diff = grad_diff(reference, cached)

    # ---- time at the large batch, interleaved
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

    def step(use_chunk):
        def run():
            fwd_bwd(model, batch, use_chunk)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return run

    print(f"time at batch {large}: plain vs cached (chunk {chunk}), {rounds} rounds", flush=True)
    timings = interleave({"plain": step(None), "cached": step(chunk)}, rounds, warmup=0)
    times = timings.wall
    ratio = paired_ratio(timings.cpu["cached"], timings.cpu["plain"])
    wall_ratio = paired_ratio(times["cached"], times["plain"])

    if args.profile:
        profile_steps({"plain": step(None), "cached": step(chunk)})

    targets = {
        f"memory_cached{large}_over_plain{small}<={MEMORY_TARGET}": mem_ratio <= MEMORY_TARGET,
        f"time_cached_over_plain@{large}<={TIME_TARGET}": ratio["median_of_ratios"] <= TIME_TARGET,
        f"same_gradients(rel_norm<={GRAD_TOL:g})": diff["same_keys"] and diff["rel_norm"] <= GRAD_TOL,
    }
    record = make_record(
        "grad_cache",
        quick=args.quick,
        machine=machine,
        config={"model": spec.to_dict(), "chunk": chunk, "small_batch": small, "large_batch": large,
                "rounds": rounds, "memory_processes_at_once": jobs, "memory_method": memory[f"plain_{small}"]["method"] +
                " in a fresh process per configuration, MALLOC_MMAP_THRESHOLD_=65536; forward + loss + backward",
                "time_step": "forward + loss + backward + AdamW(fused) step"},
        figures={"peak_mib": peak, "memory_detail": memory, "seconds_plain": stats(times["plain"]),
                 "seconds_cached": stats(times["cached"]), "cpu_seconds_plain": stats(timings.cpu["plain"]),
                 "cpu_seconds_cached": stats(timings.cpu["cached"]),
                 "gradients": diff},
        ratios={"memory_cached_large_over_plain_small": mem_ratio,
                "memory_cached_large_over_cached_small": mem_ratio_cached,
                "memory_plain_large_over_plain_small": plain_growth,
                "time_cached_over_plain": ratio["median_of_ratios"], "time_cpu_detail": ratio,
                "time_wall_detail": wall_ratio},
        targets=targets,
    )
    report(record, {
        f"peak memory cached@{large} / plain@{small}": f"{mem_ratio:.3f} (cached@{small}: {mem_ratio_cached:.3f}; "
        f"plain grows {plain_growth:.2f}x)",
        f"time cached / plain @{large}, CPU time": f"{ratio['median_of_ratios']:.3f} "
        f"(medians {ratio['ratio_of_medians']:.3f}); wall clock {wall_ratio['median_of_ratios']:.3f}",
        "gradients": f"||diff||/||grad|| {diff['rel_norm']:.3g}, max |diff| {diff['max_abs']:.3g} "
        f"({diff['max_abs_rel']:.3g} of the largest gradient entry)",
    })
    if not args.no_write:
        write_record(record, args.out)


if __name__ == "__main__":
    main()
