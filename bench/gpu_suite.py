"""The GPU suite: every GPU figure of the spec on one accelerator, in one command, in under 8 minutes.

Figures (one JSON line each, appended to ``--out`` as soon as it is measured; an error or a skip is a line too):

- ``throughput/vit-b32``: GCLTrainer with the speed switches / naive eager loop, samples/s (target >= 2.0);
- ``step_ratio/<model>``: GCL step / CLIP-pairs step at batch 1024 (SigLIP 2 base: 256) (target <= 1.01);
- ``grad_cache_memory/vit-b32``, ``grad_cache_time/vit-b32``: gradient cache at contrastive batch 8192
  (chunk 512) vs the plain step at 1024: peak memory (below it) and time per sample (<= 1.35x);
- ``encode_ready_{images,texts}/<model>``: items/s from ready device tensors;
- ``encode_decode_{images,texts}/vit-b32``: items/s with JPEG/PNG decoding / tokenization in DataLoader workers;
- ``search/exact_topk``: 16k queries x 5.6M x 512 bf16 pool, queries/s (target >= 60k), and
  ``search_check/exact_topk``: its top-k vs a float32 search on a sample.

Models: real sizes from configs with random weights (no Hub): CLIP ViT-B/32, TinyCLIP-8M/16, SigLIP 2 base, and
VISTA base once ``gcl_hf.modeling.vista`` is importable (until then: a ``skipped`` line saying so).
Imports neither ``datasets`` nor ``evaluate``.

    PYTHONPATH=src python bench/gpu_suite.py --table                 # on the device (see bench/README.md)
    PYTHONPATH=src python bench/gpu_suite.py --dry-run               # tiny sizes on the CPU, seconds
    PYTHONPATH=src python bench/gpu_suite.py --only search,step_ratio/vit-b32
    python bench/gpu_suite.py --table --from bench/results.jsonl     # print the table of written lines only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from gpu import encoding, search, training  # noqa: E402
from gpu.models import Case, Unavailable, cases  # noqa: E402
from gpu.runner import Context, Job, run_jobs  # noqa: E402

RESULTS = HERE / "results.jsonl"
DRY_RESULTS = HERE / "results-quick.jsonl"
#: batch of the step-ratio figure per model (SigLIP 2 base at 1024 needs more than an H100's 80 GB)
STEP_BATCH = {"vit-b32": 1024, "tinyclip-8m-16": 1024, "siglip2-base": 256, "vista-base": 256}


def skipped(reason: str, names: tuple[str, ...]):
    def run(ctx: Context):
        for name in names:
            yield {"figure": name, "status": "skipped", "reason": reason}
    return run


def jobs(dry_run: bool) -> list[Job]:
    """The figures in the order they run: cheap ones first, the torch.compile warm-up last. ``budget_s``: what
    each may take on an H100 (a job is skipped when less than that is left of ``--budget``)."""
    models = cases(dry_run)
    out = [Job("search", ("search/exact_topk", "search_check/exact_topk"), search.exact_search, 45)]

    def per_model(kind: str, names: tuple[str, ...], run, budget: float, only: tuple[str, ...] | None = None):
        for name, case in models.items():
            if only and name not in only:
                continue
            figures = tuple(f"{n}/{name}" for n in names)
            if isinstance(case, Unavailable):
                out.append(Job(f"{kind}/{name}", figures, skipped(case.reason, figures), 0))
            else:
                out.append(Job(f"{kind}/{name}", figures, partial(run, case=case), budget))

    per_model("encode_ready", ("encode_ready_images", "encode_ready_texts"), _ready, 25)
    out.append(Job("encode_decode/vit-b32", ("encode_decode_images/vit-b32", "encode_decode_texts/vit-b32"),
                   encoding.decoded, 40))
    per_model("step_ratio", ("step_ratio",), _step, 30)
    per_model("grad_cache", ("grad_cache_memory", "grad_cache_time"), _grad_cache, 45, only=("vit-b32",))
    per_model("throughput", ("throughput",), _throughput, 200, only=("vit-b32",))
    return out


def _ready(ctx: Context, case: Case):
    return encoding.ready(ctx, case)


def _step(ctx: Context, case: Case):
    return training.step_ratio(ctx, case, ctx.size(STEP_BATCH.get(case.name, 256), 16))


def _grad_cache(ctx: Context, case: Case):
    return training.grad_cache(ctx, case)


def _throughput(ctx: Context, case: Case):
    return training.throughput(ctx, case)


def table(lines: list[dict]) -> str:
    """Markdown table of the suite's lines (the newest line of each figure)."""
    latest: dict[str, dict] = {}
    for line in lines:
        if line.get("bench") == "gpu_suite":
            latest[line["figure"]] = line
    rows = ["| figure | value | ratio | target | pass | reference | device | date (UTC) |",
            "|---|---|---|---|---|---|---|---|"]
    for name, line in latest.items():
        if line["status"] == "ok":
            value = f"{line['value']:.4g} {line.get('unit', '')}"
        else:
            value = f"{line['status']}: {line.get('reason') or line.get('error', '')}"[:120]
        ratio = f"{line['ratio']:.3g}" if isinstance(line.get("ratio"), (int, float)) else "-"
        ok = "-" if line.get("pass") is None else ("yes" if line["pass"] else "**no**")
        dry = " (dry run)" if line.get("dry_run") else ""
        rows.append(f"| {name} | {value} | {ratio} | {line.get('target') or '-'} | {ok} | "
                    f"{line.get('reference') or '-'} | {line['device']}{dry}, torch {line['torch']} | "
                    f"{line['date'][:16].replace('T', ' ')} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (seconds): checks the suite runs")
    parser.add_argument("--only", default=None, help="comma-separated jobs or figures (e.g. search,step_ratio/vit-b32)")
    parser.add_argument("--out", default=None, help=f"JSON-lines file to append to (default {RESULTS.name}; "
                        f"--dry-run: {DRY_RESULTS.name})")
    parser.add_argument("--table", action="store_true", help="print the markdown table of this run's lines "
                        "(with --from: of that file's lines, running nothing)")
    parser.add_argument("--from", dest="from_file", default=None, help="with --table: the JSON-lines file to read")
    parser.add_argument("--budget", type=float, default=450.0,
                        help="seconds the whole run may take; a job that no longer fits is skipped (default 450)")
    parser.add_argument("--device", default=None, help="default cuda when available (the dry run: cpu)")
    args = parser.parse_args(argv)
    if args.from_file:
        with open(args.from_file, encoding="utf-8") as fh:
            print(table([json.loads(line) for line in fh if line.strip()]))
        return 0
    device = torch.device(args.device or ("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda"))
    if device.type == "cpu" and not args.dry_run:
        raise SystemExit("gpu_suite: no GPU here; run the CPU check with --dry-run")
    out = Path(args.out) if args.out else (DRY_RESULTS if args.dry_run else RESULTS)
    if args.dry_run and out.resolve() == RESULTS.resolve():
        raise SystemExit(f"gpu_suite: a dry run never writes to {RESULTS}")
    if args.dry_run:
        torch.set_num_threads(1)
    ctx = Context(device=device, dry_run=args.dry_run, out=out, budget_s=args.budget)
    only = [o.strip() for o in args.only.split(",")] if args.only else None
    selected = [job for job in jobs(args.dry_run) if job.selected(only)]
    if not selected:
        raise SystemExit(f"gpu_suite: --only {args.only} selects nothing")
    print(f"gpu suite on {ctx.header()['device']} (torch {torch.__version__}): {len(selected)} jobs -> {out}",
          flush=True)
    print("PLAN " + json.dumps([name for job in selected for name in job.figures]), flush=True)
    run_jobs(ctx, selected)
    if args.table:
        print(table(ctx.written))
    errors = [line["figure"] for line in ctx.written if line["status"] == "error"]
    print(f"done in {ctx.elapsed():.0f}s: {len(ctx.written)} lines, {len(errors)} errors {errors or ''}", flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
