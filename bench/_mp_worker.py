"""Worker of `bench_multiprocess.py`: one process of a GCL training run on a fixed global batch (gloo, CPU).

    python bench/_mp_worker.py OUT --global-batch 128 --threads 2                  # one process
    python -m torch.distributed.run --standalone --nproc_per_node 2 \\
        bench/_mp_worker.py OUT --global-batch 128 --threads 1                     # two processes

Every process builds the same model (same seed) and takes its rank's slice of the same global batch; with two
processes the model is wrapped in DDP and the loss gathers the candidates across processes. Rank 0 writes
``OUT/world<W>.pt``: the parameter gradients of the first step (DDP-averaged), the step times, and the time of
the embedding all-gather (forward + backward, as the loss does it) and of a gradient-sized all-reduce.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ModelSpec

from gcl_hf.losses import distributed as gdist


def _barrier() -> None:
    if gdist.is_distributed():
        dist.barrier()


def _median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2] if len(values) % 2 else (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--global-batch", type=int, required=True)
    parser.add_argument("--steps", type=int, default=4, help="timed optimizer steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    rank = gdist.rank()
    if args.global_batch % world:
        raise SystemExit(f"global batch {args.global_batch} is not divisible by {world} processes")
    local = args.global_batch // world

    spec = ModelSpec.tiny() if args.quick else ModelSpec()
    gcl_model = spec.gcl_model(seed=0)
    model = torch.nn.parallel.DistributedDataParallel(gcl_model) if world > 1 else gcl_model
    full = spec.batch(args.global_batch, seed=0)
    batch = {k: v[rank * local:(rank + 1) * local] for k, v in full.items()}

    # 1. the gradient of one step, from the initial weights
    model(**batch, return_loss=True).loss.backward()
    grads = {k: p.grad.detach().clone() for k, p in gcl_model.named_parameters() if p.grad is not None}
    gcl_model.zero_grad(set_to_none=True)

    # 2. full training steps: forward + loss (with the all-gather) + backward (with DDP's all-reduce) + AdamW
    optimizer = torch.optim.AdamW(gcl_model.parameters(), lr=1e-5, fused=True)
    step_times, cpu_times = [], []
    for i in range(args.steps + 1):  # the first is a warm-up (optimizer state)
        _barrier()
        wall, cpu = time.perf_counter(), time.process_time()
        model(**batch, return_loss=True).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _barrier()
        if i:
            step_times.append(time.perf_counter() - wall)
            cpu_times.append(time.process_time() - cpu)

    # 3. the collectives alone: the loss's embedding all-gather (fwd + bwd) and a gradient-sized all-reduce
    gather_s = allreduce_s = 0.0
    if world > 1:
        dim = spec.projection_dim
        emb = torch.randn(local, 3 * dim)  # the loss gathers image, text and fused candidates in one call
        times = []
        for _ in range(11):
            x = emb.clone().requires_grad_()
            _barrier()
            start = time.perf_counter()
            gdist.gather_with_grad(x).sum().backward()
            times.append(time.perf_counter() - start)
        gather_s = _median(times[1:])
        flat = torch.zeros(sum(p.numel() for p in gcl_model.parameters()))
        times = []
        for _ in range(4):
            _barrier()
            start = time.perf_counter()
            dist.all_reduce(flat)
            times.append(time.perf_counter() - start)
        allreduce_s = _median(times[1:])

    if rank == 0:
        torch.save({"world": world, "local_batch": local, "threads": args.threads, "grads": grads,
                    "step_seconds": step_times, "step_cpu_seconds": cpu_times, "gather_seconds": gather_s,
                    "allreduce_seconds": allreduce_s,
                    "params": sum(p.numel() for p in gcl_model.parameters())},
                   Path(args.out) / f"world{world}.pt")
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
