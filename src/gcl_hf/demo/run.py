"""`gcl-hf demo`: +CL vs +GCL fine-tuning on the embedded offline corpus, one command.

Renders a corpus whose pictures and captions each carry something the other lacks, pre-trains a tiny CLIP
with the CLIP loss, fine-tunes it with +CL, +GCL and the per-pair ablation side by side, for several
seeds; prints Recall@1 (mean±spread) of the nine query→candidate cells in one mixed pool and in local
pools, and the pre-registered verdict; writes ``results.json``, ``demo.png`` and ``gallery.html`` into
``--output-dir``. No download, no Hub; about 10 minutes on 2 quiet CPU cores (`--quick`: about 1).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
from dataclasses import replace

# OpenMP reads its wait policy once, when torch loads it: threads that sleep instead of spinning while they wait
# keep a second thread from stalling the run when another process holds a core (the `gcl-hf` dispatcher imports
# this module before torch). An explicit OMP_WAIT_POLICY is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from gcl_hf.demo.config import DemoConfig  # noqa: E402

__all__ = ["build_parser", "config_from_args", "main"]


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes comma-separated integers, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("--seeds needs at least one seed")
    return seeds


class _Parser(argparse.ArgumentParser):
    """A bad flag is one line (as in every `gcl-hf` command), exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    d, q = DemoConfig(), DemoConfig.quick()
    parser = _Parser(
        prog="gcl-hf demo",
        description="Fine-tune a tiny CLIP-like model with the CLIP loss (+CL) and with GCL (+GCL, and the "
                    "per-pair ablation) from the same pre-trained start, on an offline corpus whose pictures "
                    "and captions are complementary, and compare Recall@1 on all nine query→candidate "
                    "modality combinations (mixed pool and local pools), over several seeds.",
    )
    parser.add_argument("--quick", action="store_true",
                        help=f"CI-sized run (about a minute on 2 quiet cores): {q.num_train} pairs, {q.num_test} test "
                             f"items, {q.pretrain_steps}+{q.steps} steps at batch {q.batch_size}; "
                             "the flags below still override it")
    parser.add_argument("--output-dir", default=d.output_dir,
                        help="where results.json, demo.png, gallery.html and the test images go (default: %(default)s)")

    def both(name: str, fmt=str) -> str:
        return f"(default: {fmt(getattr(d, name))}; --quick: {fmt(getattr(q, name))})"

    seeds = lambda s: ",".join(map(str, s))
    parser.add_argument("--seeds", type=_seeds, default=None, metavar="S1,S2,...",
                        help="seeds, each a full replicate (corpus, initialisation, pre-training, data order) "
                             + both("seeds", seeds))
    parser.add_argument("--steps", type=int, default=None, help="fine-tuning steps per arm " + both("steps"))
    parser.add_argument("--pretrain-steps", type=int, default=None,
                        help="CLIP-loss pre-training steps " + both("pretrain_steps"))
    parser.add_argument("--batch-size", type=int, default=None,
                        help="contrastive batch size for pre-training and fine-tuning " + both("batch_size"))
    parser.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate, every arm " + both("lr"))
    parser.add_argument("--num-train", type=int, default=None,
                        help="training image–caption pairs per seed " + both("num_train"))
    parser.add_argument("--num-test", type=int, default=None,
                        help="test items per seed, a multiple of 4 (2x2 groups); the mixed pool holds 3 per item "
                             + both("num_test"))
    parser.add_argument("--gallery-queries", type=int, default=None,
                        help="queries per cell in gallery.html, 0 for none " + both("gallery_queries"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: min(2, cores)); waiting threads sleep (OMP_WAIT_POLICY=PASSIVE unless "
                             "set), so a core busy with another process does not stall the run")
    parser.add_argument("--no-plot", action="store_true", help="do not write demo.png")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


_FLAGS = ("seeds", "steps", "pretrain_steps", "batch_size", "lr", "num_train", "num_test", "gallery_queries")


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    """The :class:`~gcl_hf.demo.config.DemoConfig` that parsed arguments describe: the preset (default or
    ``--quick``) with every flag given on the command line applied on top."""
    config = DemoConfig.quick() if args.quick else DemoConfig()
    overrides = {k: getattr(args, k) for k in _FLAGS if getattr(args, k) is not None}
    if args.threads is not None:
        overrides["num_threads"] = args.threads
    return replace(config, output_dir=args.output_dir, plot=not args.no_plot, progress=not args.no_progress,
                   **overrides)


def _flag_message(exc: ValueError) -> str:
    """A `DemoConfig` validation message in terms of the command's flags (``DemoConfig.num_threads`` →
    ``--threads``)."""
    names = {"num_threads": "threads"}
    return re.sub(r"DemoConfig\.(\w+)", lambda m: "--" + names.get(m[1], m[1]).replace("_", "-"), str(exc))


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit status (0, or 2 for invalid arguments, all checked before any work)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(_flag_message(exc))  # one line, exit status 2
    if config.plot and importlib.util.find_spec("matplotlib") is None:  # not after minutes of training
        parser.error("demo.png needs matplotlib: pip install 'gcl-hf[plot]', or pass --no-plot")

    from rich.console import Console

    from gcl_hf.demo.pipeline import run_demo
    from gcl_hf.demo.report import print_report

    console = Console(highlight=False)
    if not console.is_terminal:  # piped or captured: room for the whole table
        console = Console(highlight=False, width=max(console.width, 130))
    console.print(f"[bold]gcl-hf demo[/bold]{' (--quick)' if args.quick else ''}: +CL vs +GCL on "
                  f"{config.num_train} image–caption pairs per seed, seeds {', '.join(map(str, config.seeds))} "
                  f"→ {config.output_dir}")
    result = run_demo(config, log=lambda message: console.print(f"[dim]·[/dim] {message}"))
    console.print()
    print_report(result.results, console)
    files = [result.results_path, result.plot_path, result.gallery_path]
    console.print("files: " + "   ".join(f for f in files if f))
    threads = result.results["environment"]["torch_threads"]
    console.print(f"[dim]{result.results['timings_s']['total']:.0f} s on {threads} CPU thread(s)[/dim]")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
