"""`gcl-hf eval`: score a model on M-BEIR, MMEB or CoVR; print a per-task table and write JSON.

The JSON holds ``benchmark``, ``model``, ``revision``, ``results`` (task -> every metric), ``headline`` (task ->
the metric the papers report for it and its value) and ``average`` (``{"headline": mean over tasks of their
headline metric}``, as the papers average: M-BEIR Recall@5, Recall@10 for FashionIQ and Fashion200K; MMEB
Precision@1; CoVR Recall@1 with R@5/10/50 in its row). ``gcl-hf push --eval-results`` turns it into the model
card's ``model-index``. With ``--save-rankings DIR`` each task's rankings are written as a TREC run
(``DIR/<task>.trec``), a ``{query: {candidate: score}}`` JSON (``DIR/<task>.run.json``) and TREC qrels
(``DIR/<task>.qrels``), so trec_eval, ranx or pytrec_eval can rescore them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from gcl_hf.cli.common import (SEARCH_BACKEND_CHOICES, CLIError, GCLArgumentParser, load_model, load_processor,
                               parse_options)
from gcl_hf.cli.rankings import finish_rankings, write_rankings
from gcl_hf.errors import ERRORS_MODES

__all__ = ["average_metrics", "build_parser", "evaluate_benchmark", "format_table", "main", "parse_args"]

_PROG = "gcl-hf eval"


def build_parser() -> GCLArgumentParser:
    p = GCLArgumentParser(prog=_PROG, description=__doc__)
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
    p.add_argument("--batch-size", type=int, default=64, help="rows per encoder forward pass")
    p.add_argument("--num-workers", type=int, default=0, help="dataloader workers decoding images")
    p.add_argument("--search-backend", choices=SEARCH_BACKEND_CHOICES, default="exact",
                   help="top-k search: exact streaming top-k, or a faiss flat index (needs faiss installed)")
    p.add_argument("--index", choices=SEARCH_BACKEND_CHOICES, dest="search_backend", default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)  # the 0.1 name
    p.add_argument("--cache-dir", help="cache corpus embeddings here (a global pool is encoded once)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--output", default="eval_results.json", help="JSON file to write")
    p.add_argument("--save-rankings", metavar="DIR",
                   help="write each task's rankings here: <task>.trec (TREC run), <task>.run.json, <task>.qrels; "
                        "rankings.json lists the current run's files")
    p.add_argument("--rankings-depth", type=int, default=100,
                   help="candidates kept per query in the saved rankings (at least the largest k of the task)")
    p.add_argument("--run-name", default="gcl-hf", help="run name (last column) of the TREC run files")
    p.add_argument("--errors", choices=ERRORS_MODES, default="raise",
                   help="malformed benchmark rows: stop with an error naming file/line/field, or count and skip")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def parse_args(argv: list[str] | None = None) -> Any:
    p = build_parser()
    args = p.parse_args(argv)
    for name in ("batch_size", "rankings_depth"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if any(c.isspace() for c in args.run_name) or not args.run_name:
        p.error("--run-name must be a non-empty word without spaces")
    return args


def _options(args: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"errors": args.errors}
    if args.data_revision:
        options["revision"] = args.data_revision
    if args.image_root:
        options["frames_root" if args.benchmark == "covr" else "image_root"] = args.image_root
    options.update(parse_options(args.option, _PROG))
    return options


def load_tasks(benchmark: str, root: str, options: dict[str, Any]) -> list[Any]:
    """``load_benchmark`` with an unknown or ill-typed ``--option`` reported as a :class:`CLIError`."""
    from gcl_hf.benchmarks import load_benchmark
    from gcl_hf.benchmarks.errors import BenchmarkFormatError

    try:
        return load_benchmark(benchmark, root, **options)
    except BenchmarkFormatError:
        raise
    except TypeError as exc:  # an option the loader does not take
        unknown = re.search(r"unexpected keyword argument '([^']+)'", str(exc))
        if unknown is None:
            raise
        raise CLIError(f"--option {unknown.group(1)!r}: not an option of the {benchmark} loader "
                       f"(see help(gcl_hf.benchmarks.BENCHMARKS[{benchmark!r}]))") from exc
    except ValueError as exc:  # a bad option value
        raise CLIError(f"{benchmark} at {root}: {exc}") from exc


def headline_of(tasks: list[Any]) -> dict[str, str]:
    """Task name -> the metric the papers report for it (see :func:`gcl_hf.retrieval.evaluation.headline_metric`)."""
    from gcl_hf.retrieval.evaluation import headline_metric

    return {task.name: headline_metric(task) for task in tasks}


def evaluate_benchmark(model: Any, processor: Any, tasks: list[Any], *, rankings_dir: str | Path | None = None,
                       rankings_depth: int = 100, run_name: str = "gcl-hf",
                       **eval_kwargs: Any) -> dict[str, dict]:
    """Score each task at its own cut-offs; with ``rankings_dir``, also write its rankings there (a ranking
    ``rankings_depth`` deep, at least the task's largest k; an MMEB query ranks only its own candidates)."""
    from gcl_hf.retrieval.evaluation import retrieve, score_rankings

    results: dict[str, dict] = {}
    written: dict[str, dict[str, Path]] = {}
    for task in tasks:
        if rankings_dir is None:
            depth = 1 if task.metric == "precision_at_1" else max(task.k)
        else:
            depth = max(rankings_depth, *task.k)
        rankings = retrieve(model, processor, task, depth, **eval_kwargs)
        results[task.name] = score_rankings(task, rankings.ids, task.k)
        if rankings_dir is not None:
            written[task.name] = write_rankings(rankings_dir, task, rankings, run_name=run_name)
    if rankings_dir is not None:
        finish_rankings(rankings_dir, written, run_name=run_name)
    return results


def average_metrics(results: dict[str, dict[str, float]], headline: dict[str, str]) -> dict[str, float]:
    """``{"headline": unweighted mean over tasks of each task's headline metric}`` (how the papers average
    tasks; a mean over every metric key would mix cut-offs, e.g. FashionIQ's Recall@10 with the others' @5)."""
    if not results:
        return {}
    missing = [t for t in results if headline.get(t) not in results[t]]
    if missing:
        raise ValueError(f"task {missing[0]!r}: no {headline.get(missing[0])!r} in its results")
    return {"headline": sum(results[t][headline[t]] for t in results) / len(results)}


def format_table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    """A plain-text table whose columns are as wide as their contents: never cut to the terminal's width."""
    right = right or set()
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _metric_order(name: str) -> tuple[str, int]:
    head, _, k = name.partition("@")
    return head, int(k) if k.isdigit() else 0


def render_results(benchmark: str, results: dict[str, dict[str, float]], headline: dict[str, str],
                   average: dict[str, float]) -> str:
    """The printed report: one row per task (headline metric, then every metric, in %), then the average."""
    names = sorted({m for r in results.values() for m in r if m != "num_queries"}, key=_metric_order)
    headers = ["task", "queries", "headline", "value", *names]
    rows = [[task, str(m.get("num_queries", "")), headline[task], f"{100 * m[headline[task]]:.2f}",
             *(f"{100 * m[n]:.2f}" if n in m else "-" for n in names)] for task, m in results.items()]
    if average:
        rows.append([f"average ({len(results)} tasks)", "", "headline", f"{100 * average['headline']:.2f}",
                     *("" for _ in names)])
    table = format_table(headers, rows, right=set(range(1, len(headers))) - {2})
    return f"{benchmark}: retrieval (%)\n{table}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # first: --help and bad flags load no torch

    from gcl_hf.retrieval.options import EncodeOptions

    options = _options(args)
    tasks = load_tasks(args.benchmark, args.root, options)  # first: a missing or malformed file fails fast
    model = load_model(args.model, revision=args.revision, device=args.device)
    processor = load_processor(args.model, model, processor=args.processor, revision=args.revision, prog=_PROG)
    results = evaluate_benchmark(model, processor, tasks, rankings_dir=args.save_rankings,
                                 rankings_depth=args.rankings_depth, run_name=args.run_name,
                                 index=args.search_backend, options=EncodeOptions(
                                     batch_size=args.batch_size, num_workers=args.num_workers,
                                     cache_dir=args.cache_dir, show_progress=not args.quiet))
    headline = headline_of(tasks)
    average = average_metrics(results, headline)
    print(render_results(args.benchmark, results, headline, average))
    payload = {"benchmark": args.benchmark, "model": args.model, "revision": args.revision,
               "results": results, "headline": {t: {"metric": m, "value": results[t][m]} for t, m in headline.items()},
               "average": average, "skipped_rows": {t.name: t.meta.get("skipped", 0) for t in tasks}}
    if args.save_rankings:
        payload["rankings"] = {"directory": str(args.save_rankings), "run_name": args.run_name,
                               "depth": args.rankings_depth}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.output}" + (f"; rankings in {args.save_rankings}" if args.save_rankings else ""))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
