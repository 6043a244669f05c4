"""Reproduce the GCL paper's main comparison with real checkpoints (Lee et al., NeurIPS 2025, arXiv 2509.25638).

For each backbone (CLIP-SF = ``openai/clip-vit-base-patch32`` with UniIR's score fusion, and TinyCLIP-SF), the
pre-trained model and two fine-tuned copies, +CL (CLIP's loss) and +GCL (the paper's Eq. 2), trained on LLaVA's
LCS-558K under identical settings, are evaluated on M-BEIR (local pools; global pool with instructions), the MMEB
retrieval subsets and CoVR. Writes ``results.json`` and ``results.md`` (one table, the paper's numbers beside ours).

    python examples/reproduce_paper/reproduce.py --train-data data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json \
        --image-root data/LLaVA-Pretrain/images --mbeir-root data/M-BEIR --mmeb-root data/MMEB-eval \
        --covr-root data/WebVid-CoVR --covr-frames-root data/WebVid-CoVR/frames --output-dir out/reproduce

``--smoke`` runs every step on a tiny saved model and small benchmark copies in seconds (the CI does, see
``tests/examples/test_reproduce_paper.py``). ``--stages train`` under ``torchrun`` trains on several GPUs; then
``--stages eval report`` in one process. README.md gives the downloads, the settings and their sources.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from repro_config import (
    ARMS,
    BENCHMARKS,
    PAPER_BACKBONES,
    SMOKE_EVAL,
    SMOKE_TRAIN,
    Arm,
    Backbone,
    EvalSettings,
    Paths,
    ReproConfig,
    TrainSettings,
    load_paper_results,
)

STAGES = ("train", "eval", "report")
NOT_FOUND = "n/a (not found)"


# ---------------------------------------------------------------------------------------------- arguments
def _backbone(spec: str) -> Backbone:
    label, sep, path = spec.partition("=")
    if not sep:
        label, path = Path(spec.rstrip("/")).name or spec, spec
    if not label or not path:
        raise argparse.ArgumentTypeError(f"--model {spec!r}: expected [LABEL=]NAME_OR_PATH")
    return Backbone(label, path)


def parse_args(argv: list[str] | None = None) -> tuple[ReproConfig, tuple[str, ...], bool]:
    """Read the command line into a :class:`ReproConfig`, the stages to run and ``--overwrite``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny settings (a few CPU steps); needs --model")
    p.add_argument("--model", action="append", type=_backbone, metavar="[LABEL=]NAME_OR_PATH",
                   help="backbone to compare (repeatable); default: CLIP-SF and TinyCLIP-SF from the Hub")
    p.add_argument("--train-data", help="LLaVA's blip_laion_cc_sbu_558k.json (any load_image_text_pairs source)")
    p.add_argument("--image-root", help="folder the training images' paths are relative to")
    p.add_argument("--mbeir-root", help="M-BEIR root (query/, cand_pool/, qrels/, instructions/, mbeir_images/)")
    p.add_argument("--mbeir-image-root", help="folder holding mbeir_images/ (default: --mbeir-root)")
    p.add_argument("--mbeir-local-instructions", action="store_true",
                   help="also prefix the local-pool queries with UniIR's instructions (default: bare queries)")
    p.add_argument("--mmeb-root", help="MMEB-eval root ({subset}/test-*.parquet)")
    p.add_argument("--mmeb-image-root", help="MMEB images (default: MMEB root/eval_images)")
    p.add_argument("--mmeb-subsets", nargs="+", help="MMEB subsets (default: the 12 retrieval subsets)")
    p.add_argument("--covr-root", help="WebVid-CoVR root (webvid8m-covr_test.csv)")
    p.add_argument("--covr-frames-root", help="pre-extracted CoVR frames (default: CoVR root/frames)")
    p.add_argument("--output-dir", default="reproduce-output")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    p.add_argument("--benchmarks", nargs="+", choices=[b.key for b in BENCHMARKS])
    p.add_argument("--overwrite", action="store_true", help="retrain and re-evaluate what is already done")
    g = p.add_argument_group("training overrides (default: the full run's settings, or --smoke's)")
    for flag, kind in (("global-batch-size", int), ("max-steps", int), ("epochs", float), ("learning-rate", float),
                       ("seed", int), ("lora-r", int), ("gradient-cache-chunk-size", int),
                       ("max-train-samples", int), ("dataloader-num-workers", int)):
        g.add_argument(f"--{flag}", type=kind)
    g.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"])
    g.add_argument("--eval-batch-size", type=int)
    g.add_argument("--eval-num-workers", type=int)
    args = p.parse_args(argv)

    if args.smoke and not args.model:
        p.error("--smoke needs --model <a tiny saved CLIP-like model directory>")
    train = replace(SMOKE_TRAIN if args.smoke else TrainSettings())
    for name in ("global_batch_size", "max_steps", "epochs", "learning_rate", "seed", "lora_r",
                 "gradient_cache_chunk_size", "max_train_samples", "dataloader_num_workers", "precision"):
        if getattr(args, name) is not None:
            setattr(train, name, getattr(args, name))
    evals = replace(SMOKE_EVAL if args.smoke else EvalSettings())
    if args.eval_batch_size is not None:
        evals.batch_size = args.eval_batch_size
    if args.eval_num_workers is not None:
        evals.num_workers = args.eval_num_workers
    evals.mbeir_local_instructions = args.mbeir_local_instructions
    if args.mmeb_subsets:
        evals.mmeb_subsets = tuple(args.mmeb_subsets)
    if args.benchmarks:
        evals.benchmarks = tuple(args.benchmarks)
    paths = Paths(train_data=args.train_data, image_root=args.image_root, mbeir_root=args.mbeir_root,
                  mmeb_root=args.mmeb_root, covr_root=args.covr_root, output_dir=args.output_dir,
                  mbeir_image_root=args.mbeir_image_root, mmeb_image_root=args.mmeb_image_root,
                  covr_frames_root=args.covr_frames_root)
    backbones = tuple(args.model) if args.model else PAPER_BACKBONES
    if len({b.label for b in backbones}) != len(backbones):
        p.error("--model: two backbones share a label; give LABEL=PATH")
    if "train" in args.stages and not paths.train_data:
        p.error("the train stage needs --train-data")
    if "eval" in args.stages:
        roots = {"mbeir": paths.mbeir_root, "mmeb": paths.mmeb_root, "covr": paths.covr_root}
        for key in evals.benchmarks:
            loader = next(b.loader for b in BENCHMARKS if b.key == key)
            if not roots[loader]:
                p.error(f"benchmark {key} needs --{loader}-root (or leave it out with --benchmarks)")
        if _world_size() > 1:
            p.error("run the eval stage in one process (train with torchrun --stages train, then --stages eval report)")
    if train.global_batch_size % _world_size():
        p.error(f"--global-batch-size {train.global_batch_size} is not a multiple of {_world_size()} processes")
    if {"train", "eval"} & set(args.stages):
        for b in backbones:  # a local directory that is not there (a Hub id has an owner/ prefix)
            if "/" not in b.name_or_path and not Path(b.name_or_path).is_dir():
                p.error(f"--model {b.label}: {b.name_or_path} is not a directory (VISTA: convert the released "
                        "checkpoint first, `gcl-hf convert-vista --checkpoint Visualized_base_en_v1.5.pth "
                        f"--text-model BAAI/bge-base-en-v1.5 --output {b.name_or_path}`)")
    return ReproConfig(backbones=backbones, paths=paths, train=train, eval=evals, smoke=args.smoke), \
        tuple(args.stages), args.overwrite


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def model_dir(cfg: ReproConfig, backbone: Backbone, arm: Arm) -> Path:
    return Path(cfg.paths.output_dir) / "models" / _slug(backbone.label) / arm.name


def _key(backbone: Backbone, arm: Arm) -> str:
    return f"{backbone.label}/{arm.name}"


# ---------------------------------------------------------------------------------------------- training
def _precision(setting: str) -> dict[str, bool]:
    if setting == "auto":
        setting = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return {"bf16": setting == "bf16", "fp16": setting == "fp16"}


def _relative_change(before: dict[str, torch.Tensor], model: torch.nn.Module) -> float:
    """‖θ − θ₀‖ / ‖θ₀‖ over the backbone's weights: how far fine-tuning moved the model."""
    num = den = 0.0
    for name, value in model.state_dict().items():
        if name in before and before[name].is_floating_point():
            num += float((value.detach().float().cpu() - before[name]).pow(2).sum())
            den += float(before[name].pow(2).sum())
    return math.sqrt(num / den) if den else float("nan")


def uniir_decay_names(model: torch.nn.Module) -> list[str]:
    """UniIR's weight-decay rule: every weight of 2+ dimensions except the logit scale (gains, biases, norms and
    1-d embeddings get none); the Trainer's own rule would also decay the logit scale and 1-d embeddings."""
    return [n for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]


def train_arm(cfg: ReproConfig, backbone: Backbone, arm: Arm) -> dict[str, Any]:
    """Fine-tune ``backbone`` with ``arm``'s loss; save the merged `GCLModel`, its processor and a summary."""
    from transformers import AutoProcessor

    from gcl_hf import (
        GCLCollator,
        GCLModel,
        GCLTrainer,
        GCLTrainingArguments,
        load_image_text_pairs,
    )

    t = cfg.train
    out = model_dir(cfg, backbone, arm)
    processor = AutoProcessor.from_pretrained(backbone.name_or_path)
    model = GCLModel.from_backbone(backbone.name_or_path, fusion=backbone.fusion, pairs=[list(p) for p in arm.pairs],
                                   negatives=arm.negatives)
    before = {k: v.detach().float().cpu().clone() for k, v in model.backbone.state_dict().items()}
    scale_before = float(model.logit_scale().detach())
    pairs = load_image_text_pairs(cfg.paths.train_data, image_root=cfg.paths.image_root)
    if t.max_train_samples is not None:
        pairs = pairs.select(range(min(t.max_train_samples, len(pairs))))
    args = GCLTrainingArguments(
        output_dir=str(out / "trainer"), per_device_train_batch_size=t.global_batch_size // _world_size(),
        num_train_epochs=t.epochs, max_steps=t.max_steps if t.max_steps is not None else -1,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler_type, warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay, adam_beta1=t.adam_beta1, adam_beta2=t.adam_beta2, adam_epsilon=t.adam_epsilon,
        seed=t.seed, data_seed=t.seed, dataloader_drop_last=True, dataloader_num_workers=t.dataloader_num_workers,
        gradient_cache_chunk_size=t.gradient_cache_chunk_size, lora_r=t.lora_r, lora_alpha=t.lora_alpha,
        train_logit_scale=t.train_logit_scale, logging_steps=t.logging_steps, save_strategy="no",
        eval_strategy="no", report_to=[], disable_tqdm=cfg.smoke, use_cpu=not torch.cuda.is_available(),
        **_precision(t.precision),
    )
    class Trainer(GCLTrainer):
        def get_decay_parameter_names(self, model: torch.nn.Module) -> list[str]:
            return uniir_decay_names(model)

    trainer = Trainer(model=model, args=args, train_dataset=pairs, processing_class=processor,
                         data_collator=GCLCollator.for_model(model, processor))
    started = time.perf_counter()
    result = trainer.train()
    summary: dict[str, Any] = {}
    if trainer.is_world_process_zero():
        trained = trainer.model.merge_lora()
        summary = {
            "backbone": backbone.name_or_path, "arm": arm.name,
            "pairs": [list(p) for p in arm.pairs], "negatives": arm.negatives, "fusion": model.config.fusion,
            "steps": trainer.state.global_step, "train_pairs": len(pairs),
            "global_batch_size": t.global_batch_size, "processes": _world_size(),
            "train_loss": result.metrics.get("train_loss"), "runtime_s": round(time.perf_counter() - started, 1),
            "relative_weight_change": _relative_change(before, trained.backbone),
            "logit_scale": [scale_before, float(trained.logit_scale().detach())],
            "log": [h for h in trainer.state.log_history if "loss" in h],
        }
        trained.save_pretrained(out)
        processor.save_pretrained(out)
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def run_training(cfg: ReproConfig, overwrite: bool) -> set[str]:
    """Train every fine-tuned arm of every backbone (skipping finished ones); returns the keys (re)trained."""
    retrained = set()
    for backbone in cfg.backbones:
        for arm in ARMS:
            if arm.pairs is None:
                continue
            if (model_dir(cfg, backbone, arm) / "train_summary.json").is_file() and not overwrite:
                print(f"[train] {backbone.label} {arm.label}: already trained, kept (--overwrite retrains)")
                continue
            print(f"[train] {backbone.label} {arm.label}: {backbone.name_or_path}", flush=True)
            summary = train_arm(cfg, backbone, arm)
            if summary:
                print(f"[train] {backbone.label} {arm.label}: {summary['steps']} steps, loss "
                      f"{summary['train_loss']:.4f}, weights moved {summary['relative_weight_change']:.2e}, "
                      f"{summary['runtime_s']} s", flush=True)
            retrained.add(_key(backbone, arm))
    return retrained


# ---------------------------------------------------------------------------------------------- evaluation
def load_tasks(cfg: ReproConfig, key: str) -> list[Any]:
    from gcl_hf.benchmarks import load_benchmark

    p, e = cfg.paths, cfg.eval
    arrow_cache = str(Path(p.output_dir) / "cache" / "benchmarks")
    if key in ("mbeir_local", "mbeir_global"):
        options: dict[str, Any] = {"split": e.mbeir_split, "image_root": p.mbeir_image_root, "cache_dir": arrow_cache}
        if key == "mbeir_global":
            options.update(pool="global", instructions=True)
        elif e.mbeir_local_instructions:
            options.update(instructions=True)
        return load_benchmark("mbeir", p.mbeir_root, **options)
    if key == "mmeb":
        return load_benchmark("mmeb", p.mmeb_root, subsets=e.mmeb_subsets, image_root=p.mmeb_image_root)
    if key == "covr":
        return load_benchmark("covr", p.covr_root, split=e.covr_split, frames_root=p.covr_frames_root)
    raise ValueError(f"unknown benchmark {key!r}")


def headline(key: str, tasks: list[Any], results: dict[str, dict[str, float]]) -> float:
    """The number the papers report for the benchmark, in percent (see ``BENCHMARKS`` for each definition)."""
    if key == "mmeb":
        values = [results[t.name]["precision@1"] for t in tasks]
    elif key == "covr":
        values = [results[t.name]["recall@1"] for t in tasks]
    else:
        values = [results[t.name][f"recall@{t.headline_k}"] for t in tasks]
    return 100.0 * sum(values) / len(values)


def load_model(cfg: ReproConfig, backbone: Backbone, arm: Arm) -> tuple[Any, Any, str]:
    """The model of one row (pre-trained: the backbone wrapped with its fusion) and its processor."""
    from transformers import AutoProcessor

    from gcl_hf import GCLModel

    if arm.pairs is None:
        source = backbone.name_or_path
        model = GCLModel.from_backbone(source, fusion=backbone.fusion)
    else:
        source = str(model_dir(cfg, backbone, arm))
        if not (Path(source) / "train_summary.json").is_file():
            raise FileNotFoundError(f"{backbone.label} {arm.label}: no trained model in {source}; run --stages train")
        model = GCLModel.from_pretrained(source)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval(), AutoProcessor.from_pretrained(source), source


def run_evaluation(cfg: ReproConfig, results: dict[str, Any], stale: set[str], overwrite: bool) -> None:
    """Evaluate every row on every benchmark, updating ``results`` (and ``results.json``) after each one."""
    from gcl_hf import evaluate_retrieval

    tasks_by_key: dict[str, list[Any]] = {}
    for backbone in cfg.backbones:
        for arm in ARMS:
            key = _key(backbone, arm)
            entry = results.setdefault("models", {}).get(key)
            if entry is None or key in stale or overwrite:
                entry = {"backbone": backbone.label, "arm": arm.name, "benchmarks": {}}
                results["models"][key] = entry
            todo = [b for b in cfg.eval.benchmarks if b not in entry["benchmarks"]]
            if not todo:
                continue
            model, processor, source = load_model(cfg, backbone, arm)
            entry.update(checkpoint=source, arm_label=arm.label, training=_training_summary(cfg, backbone, arm))
            for bench in todo:
                if bench not in tasks_by_key:
                    tasks_by_key[bench] = load_tasks(cfg, bench)
                tasks = tasks_by_key[bench]
                cache = Path(cfg.paths.output_dir) / "embeddings" / _slug(backbone.label) / arm.name
                started = time.perf_counter()
                per_task = {
                    task.name: evaluate_retrieval(
                        model, processor, task, k=task.k, batch_size=cfg.eval.batch_size,
                        num_workers=cfg.eval.num_workers, show_progress=cfg.eval.show_progress,
                        cache_dir=str(cache) if bench == "mbeir_global" else None)
                    for task in tasks
                }
                entry["benchmarks"][bench] = {
                    "headline": headline(bench, tasks, per_task), "tasks": per_task,
                    "runtime_s": round(time.perf_counter() - started, 1),
                }
                print(f"[eval] {backbone.label} {arm.label} {bench}: {entry['benchmarks'][bench]['headline']:.2f} "
                      f"({len(tasks)} tasks, {entry['benchmarks'][bench]['runtime_s']} s)", flush=True)
                write_json(cfg, results)
            del model


def _training_summary(cfg: ReproConfig, backbone: Backbone, arm: Arm) -> dict[str, Any] | None:
    path = model_dir(cfg, backbone, arm) / "train_summary.json"
    if arm.pairs is None or not path.is_file():
        return None
    summary = json.loads(path.read_text())
    summary.pop("log", None)
    return summary


# ---------------------------------------------------------------------------------------------- report
def _fmt(value: float | None) -> str:
    return NOT_FOUND if value is None else f"{value:.2f}"


def render_table(cfg: ReproConfig, results: dict[str, Any], paper: dict[str, Any]) -> str:
    """The Markdown table: one row per backbone x arm, ours and the paper's number side by side."""
    benches = [b for b in BENCHMARKS if b.key in cfg.eval.benchmarks]
    head = ["model"] + [c for b in benches for c in (f"{b.label} (ours)", f"{b.label} (paper)")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    sources: list[str] = []

    def paper_cell(label: str, arm: str, bench: str) -> float | None:
        cell = paper.get(label, {}).get(arm, {}).get(bench)
        if not cell:
            return None
        if cell["source"] not in sources:
            sources.append(cell["source"])
        return float(cell["value"])

    for backbone in cfg.backbones:
        rows: dict[str, list[tuple[float | None, float | None]]] = {}
        for arm in ARMS:
            entry = results.get("models", {}).get(_key(backbone, arm), {"benchmarks": {}})
            rows[arm.name] = [(entry["benchmarks"].get(b.key, {}).get("headline"),
                               paper_cell(backbone.label, arm.name, b.key)) for b in benches]
            cells = [f"{backbone.label} {arm.label}"]
            for ours, theirs in rows[arm.name]:
                cells += ["—" if ours is None else f"{ours:.2f}", _fmt(theirs)]
            lines.append("| " + " | ".join(cells) + " |")
        delta = [f"{backbone.label} Δ (+GCL − +CL)"]
        for (o_cl, p_cl), (o_gcl, p_gcl) in zip(rows["cl"], rows["gcl"]):
            delta.append("—" if None in (o_cl, o_gcl) else f"{o_gcl - o_cl:+.2f}")
            delta.append(NOT_FOUND if None in (p_cl, p_gcl) else f"{p_gcl - p_cl:+.2f}")
        lines.append("| " + " | ".join(delta) + " |")
    notes = [f"- {b.label}: {b.headline}." for b in benches]
    notes.append("- paper: " + ("; ".join(sources) if sources else
                                "no number of arXiv 2509.25638 could be read from a public source (README.md)"))
    mode = "SMOKE RUN (tiny model and fixtures: the numbers mean nothing)" if cfg.smoke else "full run"
    title = f"GCL paper reproduction, {mode}; numbers in %"
    return "\n".join([f"### {title}", "", *lines, "", *notes]) + "\n"


def write_json(cfg: ReproConfig, results: dict[str, Any]) -> Path:
    path = Path(cfg.paths.output_dir) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    from gcl_hf.atomic import atomic_write_text

    return atomic_write_text(path, json.dumps(results, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    cfg, stages, overwrite = parse_args(argv)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() and not overwrite else {}
    stale = run_training(cfg, overwrite) if "train" in stages else set()
    if _world_size() > 1 and int(os.environ.get("RANK", "0")) != 0:
        return 0
    results.update(paper="Lee et al., Generalized Contrastive Learning for Universal Multimodal Retrieval, "
                         "NeurIPS 2025, arXiv 2509.25638", mode="smoke" if cfg.smoke else "full",
                   config=cfg.to_dict(), arms={a.name: a.label for a in ARMS})
    if "eval" in stages:
        run_evaluation(cfg, results, stale, overwrite)
    paper = load_paper_results()
    results["paper_results"] = paper
    write_json(cfg, results)
    if "report" in stages:
        table = render_table(cfg, results, paper)
        (out / "results.md").write_text(table)
        print(table)
        print(f"wrote {out / 'results.md'} and {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
