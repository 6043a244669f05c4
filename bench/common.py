"""Shared helpers of the benches: the CPU model they train, timing side by side, peak memory, JSON lines.

Every bench appends one JSON object per run to ``bench/results.jsonl`` (``--quick`` runs: to
``bench/results-quick.jsonl``, so that smoke runs never mix with the headline figures) with the same keys::

    {"bench", "date", "quick", "machine", "config", "figures", "ratios", "targets", "pass"}

``targets`` maps a target's text (``"gcl_over_clip<=1.03"``) to whether it was met; ``pass`` is their
conjunction. ``machine`` records the load average before and after the run: this machine is shared,
and a ratio measured under load is only as good as the interleaving that produced it.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results.jsonl"
QUICK_RESULTS = BENCH_DIR / "results-quick.jsonl"  # --quick runs: smoke tests, never the headline table
DEFAULT_THREADS = 2


# ---------------------------------------------------------------------------------------------- machine


def resolve_threads(args: Any) -> int:
    """Set ``args.threads`` (default 2, or 1 with ``--quick``) and fix torch's intra-op threads to it."""
    args.threads = args.threads or (1 if args.quick else DEFAULT_THREADS)
    return set_threads(args.threads)


def set_threads(n: int = DEFAULT_THREADS) -> int:
    """Fix torch's intra-op threads (the benches compare like with like at 2 threads)."""
    torch.set_num_threads(n)
    return torch.get_num_threads()


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """What produced a figure: CPU, cores, memory, torch and its threads, GPU if any, load average now."""
    from gcl_hf.retrieval.search.blas import cpu_info

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": cpu_info()["model"],
        "cpus": os.cpu_count(),
        "mem_gib": _mem_total_gib(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# ---------------------------------------------------------------------------------------------- timing


def sync(device: torch.device | str | None = None) -> None:
    """Wait for queued accelerator work (no-op on CPU) so wall-clock times are the work's."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: torch.device | str | None = None) -> tuple[float, float]:
    """``(wall seconds, process CPU seconds)`` of one call of ``fn`` (accelerator work included in the wall time).

    CPU time (all threads of this process) counts only while the process runs, so it is far less disturbed
    than wall time when other jobs share the cores; with 2 intra-op threads it is about 2× the wall time.
    """
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


@dataclass
class Timings:
    """Per-round times of each contender: ``wall[name]`` and ``cpu[name]`` (lists of seconds)."""

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]


def interleave(
    contenders: dict[str, Callable[[], Any]],
    rounds: int,
    *,
    warmup: int = 1,
    device: torch.device | str | None = None,
    verbose: bool = True,
) -> Timings:
    """Time each contender once per round, alternating the order (ABBA…) so that load drifts hit all alike.

    ``warmup`` untimed rounds first (allocator, thread pools, lazy state).
    """
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    out = Timings({name: [] for name in names}, {name: [] for name in names})
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            wall, cpu = timed(contenders[name], device)
            out.wall[name].append(wall)
            out.cpu[name].append(cpu)
        if verbose:
            print(f"  round {r + 1}/{rounds}: " + "  ".join(
                f"{n} {out.wall[n][-1]:.3f}s (cpu {out.cpu[n][-1]:.3f}s)" for n in names)
                + f"  load {os.getloadavg()[0]:.1f}", flush=True)
    return out


def stats(values: list[float]) -> dict[str, float]:
    """median, min, max and all values (rounded) of a list of timings."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "all": [round(v, 4) for v in values]}


def paired_ratio(numerator: list[float], denominator: list[float]) -> dict[str, float]:
    """Ratio of two contenders timed in the same rounds: the median of the per-round ratios (each round's two
    runs are adjacent, so they share the machine's load), with the ratio of medians and of minima beside it."""
    per_round = [a / b for a, b in zip(numerator, denominator)]
    return {
        "median_of_ratios": statistics.median(per_round),
        "ratio_of_medians": statistics.median(numerator) / statistics.median(denominator),
        "ratio_of_mins": min(numerator) / min(denominator),
        "per_round": [round(r, 4) for r in per_round],
    }


def grad_diff(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> dict[str, Any]:
    """How far two sets of parameter gradients are apart.

    ``rel_norm``: ‖all differences‖ / ‖all reference gradients‖ (one global norm: some gradients are
    mathematically zero, e.g. attention key biases, and a per-tensor ratio of rounding noise to ~0 means
    nothing); ``max_abs`` and ``max_abs_rel`` (over the largest reference entry); ``worst``: the tensor with the
    largest absolute difference. ``same_keys``: both have gradients for the same parameters.
    """
    keys = sorted(reference)
    same_keys = keys == sorted(other)
    diffs = {k: (reference[k].double() - other[k].double()) for k in keys if k in other}
    diff_sq = sum(float(d.pow(2).sum()) for d in diffs.values())
    ref_sq = sum(float(reference[k].double().pow(2).sum()) for k in keys)
    max_abs = {k: float(d.abs().max()) for k, d in diffs.items()}
    worst = max(max_abs, key=max_abs.get) if max_abs else None
    biggest = max(float(reference[k].abs().max()) for k in keys) if keys else 0.0
    return {"same_keys": same_keys, "tensors": len(keys), "rel_norm": (diff_sq ** 0.5) / max(ref_sq ** 0.5, 1e-30),
            "max_abs": max_abs.get(worst, 0.0), "max_abs_rel": max_abs.get(worst, 0.0) / max(biggest, 1e-30),
            "worst": worst}


def profile_steps(steps: dict[str, Callable[[], Any]], rows: int = 12) -> dict[str, str]:
    """Run each step once under torch.profiler (CPU) and print/return its table of ops by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    tables = {}
    for name, step in steps.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        tables[name] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
        print(f"\n-- profile of the {name} step (self CPU time) --\n{tables[name]}")
    return tables


# ---------------------------------------------------------------------------------------------- memory


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux ≥ 4.0, ``echo 5 > clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_memory_mib(fn: Callable[[], Any]) -> dict[str, Any]:
    """Peak resident memory that ``fn`` adds above the process's resident memory just before it.

    Method (CPU; torch has no CPU allocator peak counter): collect garbage, reset the kernel's peak-RSS mark
    (``/proc/self/clear_refs`` ← 5), read ``VmRSS``, run ``fn``, read the peak ``VmHWM``. The difference is the
    most memory ``fn`` held at once. glibc keeps freed heap memory, so run this in a *fresh process* with
    ``MALLOC_MMAP_THRESHOLD_`` fixed (see :func:`memory_env`): every large tensor is then its own mapping,
    returned to the system when freed, and the RSS follows the live tensors. Where ``clear_refs`` cannot be
    written, falls back to ``ru_maxrss`` (the process-lifetime peak) minus the RSS before.
    On CUDA the allocator's own peak (``torch.cuda.max_memory_allocated``) is reported instead.
    """
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return {"method": "torch.cuda.max_memory_allocated",
                "peak_mib": (torch.cuda.max_memory_allocated() - before) / 2**20}
    gc.collect()
    exact = _reset_peak_rss()
    rss_before = _proc_status_kib("VmRSS") or 0
    fn()
    if exact:
        peak = _proc_status_kib("VmHWM") or 0
        method = "VmHWM after clear_refs reset, minus VmRSS before"
    else:  # pragma: no cover - non-Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        method = "ru_maxrss minus VmRSS before (process-lifetime peak)"
    return {"method": method, "peak_mib": (peak - rss_before) / 1024, "rss_before_mib": rss_before / 1024,
            "peak_rss_mib": peak / 1024}


def memory_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a memory-measuring subprocess: large allocations are always ``mmap``-ed (and unmapped when
    freed), so resident memory tracks live tensors instead of glibc's retained heap."""
    out = dict(os.environ if env is None else env)
    out.setdefault("MALLOC_MMAP_THRESHOLD_", str(64 * 1024))
    out.setdefault("MALLOC_TRIM_THRESHOLD_", str(128 * 1024))
    out.setdefault("TOKENIZERS_PARALLELISM", "false")
    out.setdefault("TRANSFORMERS_VERBOSITY", "error")
    out.setdefault("HF_HUB_OFFLINE", "1")
    src = str(BENCH_DIR.parent / "src")
    out["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR), src] + ([out["PYTHONPATH"]] if out.get("PYTHONPATH") else []))
    return out


def run_json(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 900) -> dict[str, Any]:
    """Run a command whose last stdout line is a JSON object; return it (stderr shown on failure)."""
    import subprocess

    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(cmd)} printed no JSON line:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------------- model


@dataclass
class ModelSpec:
    """The CLIP-like backbone the CPU benches train: both towers real transformers, sized so that a step at
    batch 128 takes about a second on 2 quiet cores, and the encoders dominate the step as they do at
    ViT-B/32 size. ``hidden`` / ``layers`` / ``heads`` are the vision tower's and, unless ``text_*`` are set,
    the text tower's."""

    hidden: int = 256
    layers: int = 4
    heads: int = 4
    image_size: int = 64
    patch_size: int = 16
    projection_dim: int = 256
    vocab_size: int = 49408  # CLIP's BPE vocabulary: its embedding table and its optimizer state are real costs
    max_length: int = 77
    caption_tokens: int = 20  # mean caption length in tokens (BOS and EOS included), as in CC3M/LAION captions
    text_hidden: int | None = None
    text_layers: int | None = None
    text_heads: int | None = None
    token_ids: tuple[int, int, int] = (0, 1, 2)  # BOS, EOS, PAD

    @classmethod
    def tiny(cls) -> ModelSpec:
        return cls(hidden=64, layers=2, heads=2, image_size=32, patch_size=8, projection_dim=64, vocab_size=1024,
                   max_length=32, caption_tokens=12)

    @classmethod
    def vit_b32(cls) -> ModelSpec:
        """CLIP ViT-B/32's sizes (``CLIPConfig()``'s defaults): vision 768 x 12 layers, patch 32 at 224 px;
        text 512 x 12 layers; embeddings 512."""
        return cls(hidden=768, layers=12, heads=12, image_size=224, patch_size=32, projection_dim=512,
                   text_hidden=512, text_layers=12, text_heads=8)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def clip_config(self) -> Any:
        from transformers import CLIPConfig

        bos, eos, pad = self.token_ids
        text_hidden = self.text_hidden or self.hidden
        text = {"vocab_size": self.vocab_size, "hidden_size": text_hidden, "intermediate_size": 4 * text_hidden,
                    "num_hidden_layers": self.text_layers or self.layers, "num_attention_heads": self.text_heads or self.heads,
                    "max_position_embeddings": self.max_length, "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad}
        vision = {"hidden_size": self.hidden, "intermediate_size": 4 * self.hidden, "num_hidden_layers": self.layers,
                      "num_attention_heads": self.heads, "image_size": self.image_size, "patch_size": self.patch_size}
        return CLIPConfig(text_config=text, vision_config=vision, projection_dim=self.projection_dim)

    def gcl_model(self, seed: int = 0, **overrides: Any) -> Any:
        """A fresh `GCLModel` over a randomly initialised CLIPModel of this size (train mode)."""
        import transformers
        from transformers import CLIPModel

        from gcl_hf import GCLModel

        transformers.logging.set_verbosity_error()
        torch.manual_seed(seed)
        return GCLModel.from_backbone(CLIPModel(self.clip_config()), **overrides).train()

    def batch(self, n: int, seed: int = 0, pad_to: int | None = None) -> dict[str, torch.Tensor]:
        """A synthetic collated batch: normalised pixels and captions of varied length (mean ``caption_tokens``),
        BOS…EOS then padding, padded to the batch's longest caption (dynamic padding) or to ``pad_to``."""
        g = torch.Generator().manual_seed(seed)
        pixels = torch.randn(n, 3, self.image_size, self.image_size, generator=g)
        low = max(3, self.caption_tokens // 2)
        high = min(self.max_length, 2 * self.caption_tokens - low)
        lengths = torch.randint(low, high + 1, (n,), generator=g)
        width = pad_to or int(lengths.max())
        bos, eos, pad = self.token_ids
        top = min([self.vocab_size] + [t for t in self.token_ids if t >= 3])  # ordinary tokens: [3, top)
        ids = torch.full((n, width), pad, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, length in enumerate(lengths.tolist()):
            ids[i, 0] = bos
            ids[i, 1:length - 1] = torch.randint(3, top, (length - 2,), generator=g)
            ids[i, length - 1] = eos
            mask[i, :length] = 1
        return {"pixel_values": pixels, "input_ids": ids, "attention_mask": mask}


# ---------------------------------------------------------------------------------------------- results


def make_record(bench: str, *, quick: bool, config: dict[str, Any], figures: dict[str, Any],
                ratios: dict[str, Any], targets: dict[str, bool], machine: dict[str, Any] | None = None,
                notes: str | None = None) -> dict[str, Any]:
    """One results line. ``machine`` should be :func:`machine_info` taken *before* the run (its load average);
    the load after the run is added here."""
    machine = dict(machine or machine_info())
    machine["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    record = {
        "bench": bench,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": bool(quick),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "machine": machine,
        "config": config,
        "figures": figures,
        "ratios": ratios,
        "targets": targets,
        "pass": all(targets.values()) if targets else None,
    }
    if notes:
        record["notes"] = notes
    return record


def write_record(record: dict[str, Any], out: str | os.PathLike | None = None) -> None:
    """Append ``record`` as one JSON line to ``out`` (default ``bench/results.jsonl``, or
    ``bench/results-quick.jsonl`` for a ``--quick`` run)."""
    path = Path(out) if out else (QUICK_RESULTS if record.get("quick") else RESULTS)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=float) + "\n")


def report(record: dict[str, Any], headline: dict[str, str]) -> None:
    """Print the headline ratios with their targets, then where the JSON line went."""
    print(f"\n== {record['bench']} ({'quick' if record['quick'] else 'full'}; load "
          f"{record['machine']['load_avg'][0]} -> {record['machine']['load_avg_after'][0]})")
    for label, text in headline.items():
        print(f"  {label}: {text}")
    for target, ok in record["targets"].items():
        print(f"  target {target}: {'PASS' if ok else 'FAIL'}")


def common_args(parser: Any) -> None:
    """``--quick``, ``--threads``, ``--out``, ``--no-write`` (every bench has them)."""
    parser.add_argument("--quick", action="store_true", help="a few seconds: check that the bench runs")
    parser.add_argument("--threads", type=int, default=None,
                        help=f"torch intra-op threads (default {DEFAULT_THREADS}; quick 1: tiny models gain nothing "
                             "from threads and lose a lot on a busy machine)")
    parser.add_argument("--out", default=None, help="JSON-lines file to append the result to (default "
                        "bench/results.jsonl; with --quick bench/results-quick.jsonl)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to --out")
