"""Two processes (torchrun, gloo, DDP) vs one on the same global batch: equal gradients, samples/s.

The same cores in both runs: one process with 2 intra-op threads, or two processes with 1 thread each, each
taking half of the global batch (`bench/_mp_worker.py`). The two launches alternate (ABBA) for ``--rounds``.
Reported: the largest gradient difference between the runs (2 processes: DDP-averaged, negatives gathered
across processes), samples/s of each, and the time of the loss's embedding all-gather (forward + backward)
and of a gradient-sized all-reduce as fractions of the 2-process step.

    python bench/bench_multiprocess.py           # hidden 256 / 4 layers model, global batch 128
    python bench/bench_multiprocess.py --quick   # tiny model, global batch 16
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    ModelSpec,
    common_args,
    grad_diff,
    machine_info,
    make_record,
    memory_env,
    report,
    resolve_threads,
    stats,
    write_record,
)

WORKER = Path(__file__).resolve().with_name("_mp_worker.py")
GRAD_TOL = 1e-5  # ||all gradient differences|| / ||all gradients||


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out: Path, world: int, global_batch: int, threads: int, steps: int, quick: bool) -> dict:
    worker_args = [str(WORKER), str(out), "--global-batch", str(global_batch), "--threads", str(threads),
                   "--steps", str(steps)] + (["--quick"] if quick else [])
    if world == 1:
        cmd = [sys.executable] + worker_args
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(world),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port())] + worker_args
    env = memory_env()
    env.update(OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return torch.load(out / f"world{world}.pt", weights_only=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(parser)
    parser.add_argument("--global-batch", type=int, default=None, help="default 128; quick 16")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per launch (default 4; quick 2)")
    parser.add_argument("--rounds", type=int, default=None, help="launches of each configuration (default 2)")
    args = parser.parse_args()
    resolve_threads(args)
    spec = ModelSpec.tiny() if args.quick else ModelSpec()
    global_batch = args.global_batch or (16 if args.quick else 128)
    steps = args.steps or (2 if args.quick else 4)
    rounds = args.rounds or (1 if args.quick else 2)
    machine = machine_info()
    configs = {1: args.threads, 2: max(1, args.threads // 2)}  # the same cores in both runs

    runs: dict[int, list[dict]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for world in (1, 2) if r % 2 == 0 else (2, 1):
                result = launch(Path(tmp), world, global_batch, configs[world], steps, args.quick)
                runs[world].append(result)
                print(f"  round {r + 1}: {world} process(es) x {configs[world]} thread(s): step "
                      f"{statistics.median(result['step_seconds']):.3f}s  load {os.getloadavg()[0]:.1f}", flush=True)

    diff = grad_diff(runs[1][0]["grads"], runs[2][0]["grads"])
    same = diff["same_keys"] and diff["rel_norm"] <= GRAD_TOL
    step = {w: [t for run in runs[w] for t in run["step_seconds"]] for w in runs}
    step_cpu = {w: [t for run in runs[w] for t in run["step_cpu_seconds"]] for w in runs}
    sps = {w: global_batch / statistics.median(step[w]) for w in step}
    gather = statistics.median(run["gather_seconds"] for run in runs[2])
    allreduce = statistics.median(run["allreduce_seconds"] for run in runs[2])
    two_step = statistics.median(step[2])

    record = make_record(
        "multiprocess",
        quick=args.quick,
        machine=machine,
        config={"model": spec.to_dict(), "global_batch": global_batch, "backend": "gloo", "launcher": "torchrun",
                "wrapper": "DistributedDataParallel", "threads_per_process": configs, "timed_steps": steps,
                "rounds": rounds, "step": "forward + loss (all-gather) + backward (all-reduce) + AdamW(fused) step"},
        figures={"step_seconds": {f"{w}proc": stats(step[w]) for w in step},
                 "step_cpu_seconds_rank0": {f"{w}proc": stats(step_cpu[w]) for w in step_cpu},
                 "samples_per_s": {f"{w}proc": sps[w] for w in sps},
                 "embedding_allgather_fwd_bwd_seconds": gather, "gradient_allreduce_seconds": allreduce,
                 "gradients": diff},
        ratios={"speedup_2proc_over_1proc": sps[2] / sps[1], "allgather_fraction_of_2proc_step": gather / two_step,
                "allreduce_fraction_of_2proc_step": allreduce / two_step},
        targets={f"same_gradients(rel_norm<={GRAD_TOL:g})": same},
    )
    report(record, {
        "gradients 2 proc vs 1": f"||diff||/||grad|| {diff['rel_norm']:.3g}, max |diff| {diff['max_abs']:.3g} "
        f"({diff['max_abs_rel']:.3g} of the largest gradient entry)",
        "samples/s": f"1 process {sps[1]:.1f}, 2 processes {sps[2]:.1f} (x{sps[2] / sps[1]:.2f})",
        "embedding all-gather (fwd+bwd)": f"{gather * 1e3:.2f} ms = {100 * gather / two_step:.2f}% of the step",
        "gradient all-reduce (all parameters)": f"{allreduce * 1e3:.1f} ms = {100 * allreduce / two_step:.1f}% "
        "of the step",
    })
    if not args.no_write:
        write_record(record, args.out)


if __name__ == "__main__":
    main()
