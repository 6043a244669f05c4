"""The `gcl-hf demo` pipeline: per seed, pre-train a tiny CLIP, fine-tune it with every arm, score, aggregate.

For each seed of :class:`~gcl_hf.demo.config.DemoConfig` (a full replicate):

1. :func:`~gcl_hf.demo.corpus.build_demo_corpus` renders the corpus (train pairs, 2×2 test groups) and
   :func:`~gcl_hf.demo.training.prepare_train_tensors` preprocesses the pairs once;
2. :func:`~gcl_hf.demo.training.pretrain` trains a fresh backbone with the CLIP loss;
3. :func:`~gcl_hf.demo.training.finetune` fine-tunes a copy of it per arm (same steps, lr, data order);
4. every model is scored (:mod:`gcl_hf.demo.evaluation`): nine cells in the mixed pool and in local pools,
   Recall@1/5, and the modality gap.

Then the seeds are aggregated (:mod:`gcl_hf.demo.stats`: mean ± spread, the decision rule, the verdict) into
``results.json`` (every seed's numbers kept), and the first seed's embeddings and rankings feed ``demo.png``
and ``gallery.html``. Seeds are fixed: on the same machine (same thread count) the same config gives the
same numbers.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gcl_hf.demo.backbone import build_demo_processor, build_demo_tokenizer
from gcl_hf.demo.config import CLAIM_ARM, PRETRAINED, DemoConfig
from gcl_hf.demo.corpus import build_demo_corpus
from gcl_hf.demo.evaluation import (
    CELLS,
    PoolEmbeddings,
    encode_test_pool,
    pool_modality_gap,
    score_cells,
    score_local_pools,
)
from gcl_hf.demo.results import DemoResult, SeedArtifacts
from gcl_hf.demo.stats import ROWS, claim_verdict, compare, summarize
from gcl_hf.demo.training import finetune, prepare_train_tensors, pretrain

__all__ = ["DemoResult", "SeedArtifacts", "comparable", "run_demo"]


def _set_threads(config: DemoConfig) -> int:
    threads = config.num_threads or min(2, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    return threads


def run_demo(config: DemoConfig | None = None, *, log: Callable[[str], None] | None = None) -> DemoResult:
    """Run the whole demo and write ``results.json`` (plus ``demo.png`` when ``config.plot`` and
    ``gallery.html`` when ``config.gallery_queries``) into ``config.output_dir``. ``log`` receives
    one-line stage messages (default: silent). torch's CPU thread count is set for the run
    (``config.num_threads``; results depend on it) and restored afterwards."""
    config = config or DemoConfig()
    previous_threads = torch.get_num_threads()
    try:
        return _run(config, log or (lambda message: None), _set_threads(config))
    finally:
        torch.set_num_threads(previous_threads)


def _run_seed(config: DemoConfig, seed: int, say: Callable[[str], None], keep: bool
              ) -> tuple[dict[str, Any], SeedArtifacts | None]:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        timings[name] = round(now - t0, 2)
        t0 = now

    out_dir = Path(config.output_dir) / f"seed-{seed}"
    say(f"seed {seed}: corpus of {config.num_train} train pairs and {config.num_test} test items")
    corpus = build_demo_corpus(out_dir, config.corpus_config(seed), progress=config.progress)
    tokenizer = build_demo_tokenizer(max_length=config.backbone.max_length)
    processor = build_demo_processor(tokenizer, image_size=config.backbone.image_size)
    tensors = prepare_train_tensors(corpus.train_pairs, processor, progress=config.progress)
    tasks = corpus.tasks(k=(1, 5))
    local_tasks = corpus.tasks(pool="local", k=(1, 5))
    lap("corpus")

    models: dict[str, dict[str, Any]] = {}
    embeddings: dict[str, PoolEmbeddings] = {}
    rankings: dict[str, dict[str, list[list[str]]]] = {}

    def evaluate(key: str, label: str, model: Any, history: list[dict[str, float]]) -> None:
        emb = encode_test_pool(model, processor, tasks, batch_size=config.eval_batch_size,
                               progress=config.progress, desc=f"seed {seed}: evaluate {label}")
        ranked: dict[str, list[list[str]]] = {}
        models[key] = {
            "cells": score_cells(tasks, emb, rankings=ranked),
            "local_pool": score_local_pools(local_tasks, emb),
            "modality_gap": pool_modality_gap(emb),
            "logit_scale": float(model.logit_scale().detach()),
            "train_loss": history,
        }
        if keep:
            embeddings[key], rankings[key] = emb, ranked

    say(f"seed {seed}: pre-training the tiny CLIP with the CLIP loss ({config.pretrain_steps} steps)")
    base, history = pretrain(config, tensors, tokenizer, seed)
    lap("pretrain")
    evaluate(PRETRAINED, "pre-trained", base, history)
    lap("evaluate:pretrained")
    for arm in config.arms:
        say(f"seed {seed}: fine-tuning with {arm.label} ({config.steps} steps)")
        model, history = finetune(config, base, tensors, arm, seed)
        lap(f"finetune:{arm.key}")
        evaluate(arm.key, arm.label, model, history)
        lap(f"evaluate:{arm.key}")
        del model
    artifacts = SeedArtifacts(seed, corpus.test, tasks, embeddings, rankings) if keep else None
    return {"models": models, "timings_s": timings}, artifacts


def _aggregate(results: dict[str, Any], config: DemoConfig) -> None:
    """Add ``summary``, ``comparisons`` and ``verdict`` to ``results`` (in place)."""
    results["summary"] = {pool: {metric: summarize(results, pool, metric) for metric in ("recall@1", "recall@5")}
                          for pool in ("mixed", "local")}
    results["comparisons"] = {
        pool: {arm.key: compare(results["summary"][pool]["recall@1"], arm.key, config.baseline)
               for arm in config.arms[1:]}
        for pool in ("mixed", "local")
    }
    claim = CLAIM_ARM if CLAIM_ARM in results["comparisons"]["mixed"] else None
    results["verdict"] = (dict(claim_verdict(results["comparisons"]["mixed"][claim]), arm=claim,
                               baseline=config.baseline, metric="recall@1", pool="mixed") if claim else None)


def _run(config: DemoConfig, say: Callable[[str], None], threads: int) -> DemoResult:
    out_dir = Path(config.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    per_seed: dict[str, Any] = {}
    first: SeedArtifacts | None = None
    for n, seed in enumerate(config.seeds):
        per_seed[str(seed)], artifacts = _run_seed(config, seed, say, keep=n == 0)
        first = first or artifacts
    results: dict[str, Any] = {
        "config": config.to_dict(),
        "cells": [f"{q}->{c}" for q, c in CELLS],
        "rows": list(ROWS),
        "baseline": config.baseline,
        "models": {PRETRAINED: {"label": "pre-trained", "note": ""},
                   **{arm.key: {"label": arm.label, "note": arm.note} for arm in config.arms}},
        "seeds": per_seed,
        "environment": {"torch_threads": threads, "torch": torch.__version__, "cuda": torch.cuda.is_available()},
    }
    _aggregate(results, config)
    assert first is not None
    result = DemoResult(results=results, first_seed=first, results_path=str(out_dir / "results.json"))
    if config.plot:
        from gcl_hf.demo.plot import plot_demo

        result.plot_path = plot_demo(result, out_dir / "demo.png")
    if config.gallery_queries and len(config.arms) > 1:
        from gcl_hf.demo.gallery import write_gallery

        result.gallery_path = write_gallery(result, out_dir / "gallery.html", per_cell=config.gallery_queries,
                                            arms=(config.baseline, CLAIM_ARM if CLAIM_ARM in results["models"]
                                                  else config.arms[1].key))
    results["timings_s"] = {"total": round(time.perf_counter() - start, 2)}
    Path(result.results_path).write_text(json.dumps(results, indent=2))
    return result


def comparable(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` without what legitimately differs between identical runs (timings, paths)."""
    out = {k: v for k, v in results.items() if k != "timings_s"}
    out["config"] = {k: v for k, v in out["config"].items() if k not in ("output_dir", "progress")}
    out["seeds"] = {s: {k: v for k, v in r.items() if k != "timings_s"} for s, r in out["seeds"].items()}
    return out
