"""Run every bench (each in its own process) and print a table of the latest figures from bench/results.jsonl.

    python bench/run_all.py --quick          # every bench at its --quick size (under 3 minutes; smoke test;
                                             # results go to bench/results-quick.jsonl)
    python bench/run_all.py                  # the target sizes (tens of minutes on 2 shared CPU cores)
    python bench/run_all.py --table          # only print the table of the latest full-size results
    python bench/run_all.py --only grad_cache,encoding --markdown

Without a GPU the full-size training-throughput bench is not run (its figures need one); ``--quick`` runs
its small CPU form. The table takes, per bench, the newest line of the requested kind (full or quick).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.jsonl"
QUICK_RESULTS = HERE / "results-quick.jsonl"

#: name -> script, in the order they run
BENCHES: dict[str, str] = {
    "train_step_gcl_vs_clip": "bench_train_step.py",
    "grad_cache": "bench_grad_cache.py",
    "search": "bench_search.py",
    "encoding": "bench_encoding.py",
    "multiprocess": "bench_multiprocess.py",
    "train_throughput": "bench_train_throughput.py",
}


def _get(record: dict, path: str) -> Any:
    value: Any = record
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _target(record: dict, prefix: str) -> bool | None:
    targets = record.get("targets") or record.get("targets_met") or {}
    for key, ok in targets.items():
        if key.startswith(prefix):
            return bool(ok)
    return None


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return format(value, spec)
    return str(value)


# (bench, figure, value(record) -> str, target text, pass(record) -> bool | None)
Row = tuple[str, str, Callable[[dict], str], str, Callable[[dict], "bool | None"]]
ROWS: list[Row] = [
    ("train_step_gcl_vs_clip", "GCL step / CLIP-pairs step (CPU time, median of paired rounds)",
     lambda r: _fmt(_get(r, "ratios.gcl_over_clip"), ".4f") +
     f" (wall {_fmt(_get(r, 'ratios.gcl_over_clip_wall.median_of_ratios'), '.3f')}, "
     f"from loss alone {_fmt(_get(r, 'ratios.predicted_from_loss_only'), '.4f')})",
     "<= 1.03", lambda r: _target(r, "gcl_over_clip")),
    ("grad_cache", "peak memory, cached @512 / plain @64 (chunk 64)",
     lambda r: _fmt(_get(r, "ratios.memory_cached_large_over_plain_small")) +
     f" (plain @512 / @64: {_fmt(_get(r, 'ratios.memory_plain_large_over_plain_small'), '.2f')})",
     "<= 1.3", lambda r: _target(r, "memory_")),
    ("grad_cache", "time, cached / plain @512 (CPU time)",
     lambda r: _fmt(_get(r, "ratios.time_cached_over_plain")) +
     f" (wall {_fmt(_get(r, 'ratios.time_wall_detail.median_of_ratios'))})",
     "<= 1.35", lambda r: _target(r, "time_")),
    ("grad_cache", "gradients, ||diff|| / ||grad||", lambda r: _fmt(_get(r, "figures.gradients.rel_norm"), ".2g"),
     "<= 1e-5", lambda r: _target(r, "same_gradients")),
    ("search", "exact_topk float32 / bare chunked matmuls", lambda r: _fmt(_get(r, "ratios.exact_over_bare")),
     "<= 1.05", lambda r: _target(r, "exact_over_bare")),
    ("search", "exact_topk float32 / faiss IndexFlatIP", lambda r: _fmt(_get(r, "ratios.exact_over_faiss")),
     "<= 0.9", lambda r: _target(r, "exact_over_faiss")),
    ("search", "exact_topk bf16-rescore / faiss IndexFlatIP", lambda r: _fmt(_get(r, "ratios.bf16_over_faiss")),
     "report", lambda r: None),
    ("search", "top-k identical to faiss", lambda r: _fmt(_get(r, "topk_check.rows_unexplained"), "d") +
     " unexplained rows", "0", lambda r: _target(r, "identical")),
    ("search", "bf16-rescore identical to float32",
     lambda r: _fmt(_get(r, "bf16_check.rows_differing_from_float32"), "d") + " rows differ",
     "0", lambda r: _target(r, "bf16_identical")),
    ("encoding", "pool encoding, real loading / ready tensors",
     lambda r: _fmt(_get(r, "ratios.loading_over_ready")) + f" ({_get(r, 'ratios.best_workers') or '-'})",
     ">= 0.9", lambda r: _target(r, "loading_over_ready")),
    ("multiprocess", "gradients, 2 processes vs 1, ||diff|| / ||grad||",
     lambda r: _fmt(_get(r, "figures.gradients.rel_norm"), ".2g"), "<= 1e-5", lambda r: _target(r, "same_gradients")),
    ("multiprocess", "samples/s, 2 proc x 1 thread vs 1 proc x 2 threads",
     lambda r: f"{_fmt(_get(r, 'figures.samples_per_s.2proc'), '.1f')} vs "
     f"{_fmt(_get(r, 'figures.samples_per_s.1proc'), '.1f')} (x{_fmt(_get(r, 'ratios.speedup_2proc_over_1proc'), '.2f')});"
     f" all-gather {_fmt(100 * (_get(r, 'ratios.allgather_fraction_of_2proc_step') or 0), '.2f')}% of the step",
     "report", lambda r: None),
    ("train_throughput", "GCLTrainer (speed options) / naive loop, samples/s",
     lambda r: _fmt(_get(r, "ratios.trainer_over_naive"), ".2f") + f" on {_get(r, 'config.device')}",
     ">= 2 (GPU)", lambda r: _target(r, "trainer_over_naive")),
]


def _is_quick(record: dict) -> bool:
    if "quick" in record:
        return bool(record["quick"])
    corpus = _get(record, "sizes.corpus")  # bench_search.py records sizes, not a quick flag
    return corpus is not None and corpus < 200_000


def latest(path: Path = RESULTS, quick: bool = False) -> dict[str, dict]:
    """The newest record of each bench of the requested kind."""
    out: dict[str, dict] = {}
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if _is_quick(record) == quick and record.get("bench"):
            out[record["bench"]] = record  # later lines are newer
    return out


def table(records: dict[str, dict], markdown: bool = False) -> str:
    header = ["bench", "figure", "value", "target", "pass", "date (UTC)", "load (1 min)"]
    rows = []
    for bench, figure, value, target, ok in ROWS:
        record = records.get(bench)
        if record is None:
            note = "not measured: no GPU lent to this session" if bench == "train_throughput" else "not run"
            rows.append([bench, figure, note, target, "-", "-", "-"])
            continue
        passed = ok(record)
        load = _get(record, "machine.load_avg") or _get(record, "machine.load_avg_1m")
        load = load[0] if isinstance(load, list) else load
        rows.append([bench, figure, value(record), target, "-" if passed is None else ("yes" if passed else "NO"),
                     str(record.get("date", "-"))[:16], _fmt(load, ".1f")])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="run every bench at its --quick size")
    parser.add_argument("--only", default=None, help="comma-separated bench names to run (default: all)")
    parser.add_argument("--table", action="store_true", help="print the table only, run nothing")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--results", default=None,
                        help="JSON-lines file (default bench/results.jsonl; with --quick bench/results-quick.jsonl)")
    args = parser.parse_args()
    results = Path(args.results) if args.results else (QUICK_RESULTS if args.quick else RESULTS)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise SystemExit(f"unknown bench(es) {unknown}; known: {list(BENCHES)}")

    failures = []
    if not args.table:
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1",
                   PYTHONWARNINGS="ignore")
        total = time.perf_counter()
        for name in names:
            if name == "train_throughput" and not args.quick and not torch.cuda.is_available():
                print(f"== {name}: skipped (needs a GPU at full size; run with --quick for the CPU check)")
                continue
            cmd = [sys.executable, str(HERE / BENCHES[name])] + (["--quick"] if args.quick else [])
            cmd += ["--out", str(results)]  # explicit: bench_search.py's own default is results.jsonl
            print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
            start = time.perf_counter()
            proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
            took = time.perf_counter() - start
            tail = "\n".join(line for line in proc.stdout.splitlines()[-8:] if not line.startswith("{"))
            print(tail)
            print(f"   ({took:.0f}s, exit {proc.returncode})", flush=True)
            if proc.returncode != 0:
                failures.append(name)
                print(proc.stderr[-3000:], file=sys.stderr)
        print(f"\nall benches: {time.perf_counter() - total:.0f}s")

    print()
    print(table(latest(results, quick=args.quick), markdown=args.markdown))
    if args.quick:
        print("\n(--quick: tiny models and sizes, 1 thread; the figure names give the full sizes, and the targets "
              "only apply there)")
    if failures:
        raise SystemExit(f"benches that failed: {failures}")


if __name__ == "__main__":
    main()
