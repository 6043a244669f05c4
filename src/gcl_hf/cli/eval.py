"""`gcl-hf eval`: score a model on M-BEIR, MMEB or CoVR; print a per-task table and write JSON.

The JSON (``{"benchmark", "model", "revision", "results": {task: metrics}, "average": metrics}``) is what
``gcl-hf push --eval-results`` turns into the model card's ``model-index``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gcl_hf.cli.common import load_processor, parse_options

__all__ = ["average_metrics", "evaluate_benchmark", "main", "parse_args"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gcl-hf eval", description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", required=True, choices=["mbeir", "mmeb", "covr"], help="benchmark to run")
    p.add_argument("--root", required=True, help="benchmark root directory (published layout) or Hub dataset repo")
    p.add_argument("--model", required=True,
                   help="saved GCLModel / adapter / plain CLIP-like checkpoint: local directory or Hub id")
    p.add_argument("--revision", help="model revision (branch, tag or commit sha)")
    p.add_argument("--processor", help="processor to use (default: the model's own, else its base model's)")
    p.add_argument("--data-revision", help="benchmark repo revision when --root is a Hub repo")
    p.add_argument("--image-root", help="where benchmark image paths resolve (default: under --root)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=JSON",
                   help="extra loader option, e.g. --option pool='\"global\"' --option instructions=true "
                        "--option 'datasets=[\"mscoco_task0\"]' (repeatable)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=0, help="dataloader workers decoding images")
    p.add_argument("--index", choices=["exact", "faiss"], default="exact", help="top-k search backend")
    p.add_argument("--cache-dir", help="cache corpus embeddings here (a global pool is encoded once)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--output", default="eval_results.json", help="JSON file to write")
    p.add_argument("--errors", choices=["raise", "skip"], default="raise",
                   help="malformed benchmark rows: stop with an error naming file/line/field, or count and skip")
    return p.parse_args(argv)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"errors": args.errors}
    if args.data_revision:
        options["revision"] = args.data_revision
    if args.image_root:
        options["frames_root" if args.benchmark == "covr" else "image_root"] = args.image_root
    options.update(parse_options(args.option, "gcl-hf eval"))
    return options


def average_metrics(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """Unweighted mean over tasks of every metric all tasks share (as the papers average tasks)."""
    if not results:
        return {}
    shared = set.intersection(*(set(m) for m in results.values())) - {"num_queries"}
    return {name: sum(m[name] for m in results.values()) / len(results) for name in sorted(shared)}


def evaluate_benchmark(model: Any, processor: Any, tasks: list[Any], **eval_kwargs: Any) -> dict[str, dict]:
    """Run :func:`gcl_hf.evaluate_retrieval` on each task, at the task's own cut-offs."""
    from gcl_hf.retrieval.evaluation import evaluate_retrieval

    return {task.name: evaluate_retrieval(model, processor, task, k=task.k, **eval_kwargs) for task in tasks}


def _print_table(benchmark: str, results: dict[str, dict[str, float]], average: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    names = sorted({m for r in results.values() for m in r if m != "num_queries"},
                   key=lambda m: (m.split("@")[0], int(m.split("@")[1]) if "@" in m else 0))
    table = Table(title=f"{benchmark}: retrieval (%)")
    table.add_column("task")
    table.add_column("queries", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for task, metrics in results.items():
        table.add_row(task, str(metrics.get("num_queries", "")),
                      *(f"{100 * metrics[n]:.2f}" if n in metrics else "" for n in names))
    table.add_row("average", "", *(f"{100 * average[n]:.2f}" if n in average else "" for n in names),
                  style="bold")
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = _options(args)
    from gcl_hf import hub
    from gcl_hf.benchmarks import load_benchmark

    model = hub.load(args.model, revision=args.revision)
    if args.device:
        model.to(args.device)
    else:
        import torch

        if torch.cuda.is_available():
            model.to("cuda")
    processor = load_processor(args.model, model, processor=args.processor, revision=args.revision,
                               prog="gcl-hf eval")
    tasks = load_benchmark(args.benchmark, args.root, **options)
    results = evaluate_benchmark(model, processor, tasks, batch_size=args.batch_size, num_workers=args.num_workers,
                                 index=args.index, cache_dir=args.cache_dir)
    average = average_metrics(results)
    _print_table(args.benchmark, results, average)
    payload = {"benchmark": args.benchmark, "model": args.model, "revision": args.revision,
               "results": results, "average": average,
               "skipped_rows": {t.name: t.meta.get("skipped", 0) for t in tasks}}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
