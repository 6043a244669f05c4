"""The `gcl-hf demo` pipeline: pre-train a tiny CLIP, fine-tune it with CLIP loss and with GCL, compare.

Steps (each a function, :func:`run_demo` chains them):

1. :func:`~gcl_hf.demo.corpus.build_demo_corpus` renders the offline scene corpus (train pairs, held-out
   test items); :func:`prepare_train_tensors` turns the train pairs into pixel and token tensors once.
2. :func:`pretrain` trains a fresh :func:`~gcl_hf.demo.backbone.build_demo_backbone` with the plain CLIP
   loss: the stand-in for an off-the-shelf checkpoint.
3. :func:`finetune` fine-tunes copies of that checkpoint, one per :class:`Arm` (CLIP loss, GCL with the
   paper's modality negatives, GCL with all negatives): same steps, batch, learning rate and data order.
4. :func:`encode_test_pool` embeds the mixed test pool and the queries of every modality once per model, and
   :func:`score_cells` ranks and scores the nine query→candidate tasks with the benchmarks' evaluator
   (:func:`gcl_hf.retrieval.evaluation.rank_corpus` / :func:`~gcl_hf.retrieval.evaluation.score_rankings`, which honour
   ``task.exclude``), plus the modality gap (:func:`gcl_hf.retrieval.analysis.modality_gap`).

Training uses :class:`~gcl_hf.training.trainer.GCLTrainer`; batches come from pre-computed tensors (no image decoding
per step), so a step costs only the forward and backward passes. Seeds are fixed: on the same machine
(same thread count) the same config gives the same numbers.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from gcl_hf.retrieval.analysis import modality_gap
from gcl_hf.benchmarks.task import MODALITIES, RetrievalTask
from gcl_hf.retrieval.encoding import encode_dataset
from gcl_hf.retrieval.evaluation import rank_corpus, score_rankings
from gcl_hf.modeling.model import GCLModel
from gcl_hf.demo.backbone import DemoBackboneConfig, build_demo_backbone, build_demo_processor, pixel_values
from gcl_hf.demo.corpus import MODALITY_LABELS, DemoCorpus, DemoCorpusConfig, build_demo_corpus, build_retrieval_tasks

__all__ = [
    "ARMS",
    "Arm",
    "CELLS",
    "DemoConfig",
    "DemoResult",
    "PRETRAIN_ARM",
    "PoolEmbeddings",
    "TrainTensors",
    "comparable",
    "encode_test_pool",
    "finetune",
    "prepare_train_tensors",
    "pretrain",
    "run_demo",
    "score_cells",
    "score_local_pools",
    "train_model",
]

#: The nine cells, row-major: ("image", "image"), ("image", "text"), ..., ("fused", "fused").
CELLS: tuple[tuple[str, str], ...] = tuple(
    (MODALITY_LABELS[q], MODALITY_LABELS[c]) for q in MODALITIES for c in MODALITIES
)
#: Result keys of the models, in the order they are reported.
PRETRAINED = "pretrained"


@dataclass(frozen=True)
class Arm:
    """One fine-tuning recipe: the loss the pre-trained model is fine-tuned with."""

    key: str
    label: str
    pairs: str = "all"  # "clip" (image<->text) or "all" (GCL's six pairs)
    negatives: str = "modality"  # "modality" (the paper) or "all"
    pair_weights: tuple[float, ...] | None = None
    note: str = ""  # one line for the table's caption


#: The loss of the pre-training ("off-the-shelf checkpoint"): plain CLIP.
PRETRAIN_ARM = Arm("pretrain", "CLIP loss", pairs="clip")

#: The default arms; the first one is the baseline the others are compared with.
ARMS: tuple[Arm, ...] = (
    Arm("clip", "CLIP loss", pairs="clip"),
    Arm("gcl", "GCL (paper)", pairs="all", negatives="modality",
        note="GCL (paper): the six modality pairs, negatives from the target modality."),
    Arm("gcl-all", "GCL (all)", pairs="all", negatives="all",
        note="GCL (all): the six pairs, every other batch embedding a negative."),
)


@dataclass
class DemoConfig:
    """Everything that determines a demo run (defaults: the full demo, a few minutes on 2 CPU cores)."""

    output_dir: str = "gcl-demo-output"
    seed: int = 0
    num_train: int = 20_000
    num_test: int = 500
    pretrain_steps: int = 400
    steps: int = 400
    batch_size: int = 128
    pretrain_lr: float = 1e-3
    lr: float = 2e-4
    weight_decay: float = 0.1
    pretrain_warmup_steps: int = 40
    eval_batch_size: int = 256
    arms: tuple[Arm, ...] = ARMS
    backbone: DemoBackboneConfig = field(default_factory=DemoBackboneConfig)
    #: torch CPU threads (``None``: ``min(2, os.cpu_count())``, the demo's target machine).
    num_threads: int | None = None
    plot: bool = True
    progress: bool = True

    @classmethod
    def quick(cls, **overrides: Any) -> "DemoConfig":
        """A CI-sized run (~1 minute on 2 cores): fewer pairs, test items and steps."""
        base = cls(num_train=4_000, num_test=200, pretrain_steps=150, steps=100, batch_size=64)
        return replace(base, **overrides)

    def __post_init__(self) -> None:
        for name in ("num_train", "num_test", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"DemoConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("pretrain_steps", "steps", "pretrain_warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"DemoConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size > self.num_train:
            raise ValueError(f"DemoConfig.batch_size={self.batch_size} exceeds num_train={self.num_train}")
        if not self.arms:
            raise ValueError("DemoConfig.arms is empty")
        keys = [arm.key for arm in self.arms]
        if len(set(keys)) != len(keys) or PRETRAINED in keys:
            raise ValueError(f"DemoConfig.arms: keys must be unique and not {PRETRAINED!r}, got {keys}")

    def corpus_config(self) -> DemoCorpusConfig:
        return DemoCorpusConfig(num_train=self.num_train, num_test=self.num_test,
                                image_size=self.backbone.image_size, seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["arms"] = [asdict(arm) for arm in self.arms]
        return out


# ---------------------------------------------------------------------------------------------- data


@dataclass
class TrainTensors:
    """The train pairs, preprocessed once: pixel values ``[N, 3, H, W]`` and captions padded to the
    tokenizer's max length (``input_ids``/``attention_mask`` ``[N, L]``)."""

    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def __len__(self) -> int:
        return self.pixel_values.shape[0]


def prepare_train_tensors(train: Any, processor: Any, chunk_size: int = 2048, progress: bool = True) -> TrainTensors:
    """Decode and normalise every train image (:func:`~gcl_hf.demo.backbone.pixel_values`) and tokenize
    every caption, in chunks."""
    from tqdm.auto import tqdm

    n = len(train)
    tokens = processor.tokenizer(list(train["text"][:]), padding="max_length", truncation=True,
                                 return_tensors="pt")
    chunks = []
    images = train.select_columns(["image"])
    for start in tqdm(range(0, n, chunk_size), desc="preprocess train", unit="chunk", disable=not progress):
        chunks.append(pixel_values(images[start:start + chunk_size]["image"], processor))
    return TrainTensors(torch.cat(chunks), tokens["input_ids"], tokens["attention_mask"])


class _Indices(torch.utils.data.Dataset):
    """Map-style dataset whose record ``i`` is ``{"row": i}``; :class:`_TensorCollator` does the rest."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, int]:
        return {"row": i}


class _TensorCollator:
    """Batch = rows of the pre-computed tensors; captions trimmed to the batch's longest (dynamic padding)."""

    def __init__(self, tensors: TrainTensors) -> None:
        self.tensors = tensors

    def __call__(self, records: list[dict[str, int]]) -> dict[str, torch.Tensor]:
        rows = torch.tensor([r["row"] for r in records], dtype=torch.long)
        mask = self.tensors.attention_mask[rows]
        length = int(mask.sum(1).max())
        return {"pixel_values": self.tensors.pixel_values[rows],
                "input_ids": self.tensors.input_ids[rows, :length], "attention_mask": mask[:, :length]}


# ---------------------------------------------------------------------------------------------- training


def _progress_callback(desc: str, enabled: bool, history: list[dict[str, float]]):
    """A Trainer callback: one tqdm bar per run (loss in the postfix) and the log history collected."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = tqdm(total=state.max_steps, desc=desc, unit="step", disable=not enabled)

        def on_step_end(self, args, state, control, **kwargs):
            self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                history.append({"step": state.global_step, **{k: float(v) for k, v in logs.items()
                                                              if k == "loss" or k.startswith("loss/")}})
                self.bar.set_postfix(loss=f"{logs['loss']:.3f}")

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.close()

    return _Progress()


def train_model(model: GCLModel, tensors: TrainTensors, arm: Arm, *, steps: int, lr: float, seed: int,
                batch_size: int, weight_decay: float, warmup_steps: int = 0, scheduler: str = "linear",
                desc: str = "train", progress: bool = True) -> list[dict[str, float]]:
    """Train ``model`` in place with :class:`~gcl_hf.training.trainer.GCLTrainer` for ``steps`` AdamW steps on batches
    of ``tensors``, with ``arm``'s loss (set through the `GCLTrainingArguments` loss fields, which write it
    into the model's config); returns the logged losses (``loss`` and ``loss/<pair>``)."""
    from transformers.trainer_callback import ProgressCallback

    from gcl_hf.training.trainer import GCLTrainer
    from gcl_hf.training.arguments import GCLTrainingArguments

    history: list[dict[str, float]] = []
    if steps == 0:
        return history
    work_dir = tempfile.mkdtemp(prefix="gcl-demo-trainer-")  # nothing is saved; the Trainer wants a directory
    args = GCLTrainingArguments(
        output_dir=work_dir, max_steps=steps, per_device_train_batch_size=batch_size,
        learning_rate=lr, weight_decay=weight_decay, lr_scheduler_type=scheduler, warmup_steps=warmup_steps,
        seed=seed, data_seed=seed, dataloader_drop_last=True, dataloader_num_workers=0,
        logging_strategy="steps", logging_steps=max(1, steps // 20), save_strategy="no", eval_strategy="no",
        report_to=[], disable_tqdm=False, use_cpu=not torch.cuda.is_available(),
        pairs=arm.pairs, negatives=arm.negatives,
        pair_weights=",".join(str(w) for w in arm.pair_weights) if arm.pair_weights is not None else None,
    )
    trainer = GCLTrainer(model=model, args=args, data_collator=_TensorCollator(tensors),
                         train_dataset=_Indices(len(tensors)))
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_progress_callback(desc, progress, history))
    try:
        trainer.train()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    model.eval()
    return history


def pretrain(config: DemoConfig, tensors: TrainTensors, tokenizer: Any) -> tuple[GCLModel, list[dict[str, float]]]:
    """A fresh demo backbone trained with the plain CLIP loss: the "off-the-shelf checkpoint" of the demo."""
    backbone = build_demo_backbone(tokenizer, seed=config.seed, config=config.backbone)
    model = GCLModel.from_backbone(backbone)
    history = train_model(model, tensors, PRETRAIN_ARM, steps=config.pretrain_steps, lr=config.pretrain_lr,
                          seed=config.seed, batch_size=config.batch_size, weight_decay=config.weight_decay,
                          warmup_steps=min(config.pretrain_warmup_steps, config.pretrain_steps),
                          scheduler="cosine", desc="pre-train (CLIP loss)", progress=config.progress)
    return model, history


def finetune(config: DemoConfig, start: GCLModel, tensors: TrainTensors, arm: Arm) -> tuple[GCLModel, list[dict[str, float]]]:
    """A copy of ``start`` fine-tuned with ``arm``'s loss (same steps, batch, lr and data order for every arm)."""
    model = copy.deepcopy(start)
    history = train_model(model, tensors, arm, steps=config.steps, lr=config.lr, seed=config.seed + 1,
                          batch_size=config.batch_size, weight_decay=config.weight_decay, scheduler="linear",
                          desc=f"fine-tune: {arm.label}", progress=config.progress)
    return model, history


# ---------------------------------------------------------------------------------------------- evaluation


@dataclass
class PoolEmbeddings:
    """Embeddings of the shared mixed pool (row-aligned with ``tasks[0].corpus``) and of the queries of
    each modality (row-aligned with the queries of that modality's tasks)."""

    corpus: torch.Tensor
    queries: dict[str, torch.Tensor]  # modality label ("image", "text", "fused") -> [n, D]
    candidates: dict[str, torch.Tensor]  # modality label -> the pool's rows of that modality, in item order


def encode_test_pool(model: GCLModel, processor: Any, tasks: list[RetrievalTask], *, batch_size: int = 256,
                     progress: bool = True, desc: str = "encode") -> PoolEmbeddings:
    """Embed the shared corpus once and each modality's queries once with
    :func:`gcl_hf.retrieval.encoding.encode_dataset` (the encoder of :func:`gcl_hf.retrieval.evaluation.evaluate_retrieval`)."""
    from tqdm.auto import tqdm

    corpus = tasks[0].corpus
    if any(task.corpus is not corpus for task in tasks):
        raise ValueError("encode_test_pool expects the tasks to share one corpus (the mixed pool)")
    query_sets = {}
    for task in tasks:
        query_sets.setdefault(MODALITY_LABELS[task.meta["query_modality"]], task.queries)
    total = len(corpus) + sum(len(q) for q in query_sets.values())
    common = dict(image_root=tasks[0].image_root, batch_size=batch_size, show_progress=False)
    with tqdm(total=total, desc=desc, unit="item", disable=not progress) as bar:
        corpus_emb = encode_dataset(model, processor, corpus, **common)
        bar.update(len(corpus))
        queries = {}
        for label, dataset in query_sets.items():
            queries[label] = encode_dataset(model, processor, dataset, **common)
            bar.update(len(dataset))
    modality = np.asarray(corpus["modality"], dtype=object)
    candidates = {MODALITY_LABELS[m]: corpus_emb[torch.from_numpy(np.nonzero(modality == m)[0])] for m in MODALITIES}
    return PoolEmbeddings(corpus_emb, queries, candidates)


def score_cells(tasks: list[RetrievalTask], embeddings: PoolEmbeddings, k: tuple[int, ...] = (1, 5)) -> dict[str, dict[str, float]]:
    """``{"image->text": {"recall@1": ..., "recall@5": ...}, ...}`` for the nine tasks, ranked by
    :func:`gcl_hf.retrieval.evaluation.rank_corpus` (exact top-k, ``task.exclude`` removed) and scored by
    :func:`gcl_hf.retrieval.evaluation.score_rankings` (the shipped ``recall_at_k`` metric)."""
    out = {}
    for task in tasks:
        label = MODALITY_LABELS[task.meta["query_modality"]]
        rankings = rank_corpus(task, embeddings.queries[label], embeddings.corpus, max(k))
        scores = score_rankings(task, rankings, k)
        out[task.name.split(":", 1)[1]] = {f"recall@{x}": scores[f"recall@{x}"] for x in k}
    return out


def score_local_pools(local_tasks: list[RetrievalTask], embeddings: PoolEmbeddings,
                      k: tuple[int, ...] = (1, 5)) -> dict[str, dict[str, float]]:
    """Like :func:`score_cells` on the single-modality pools (``pool="local"``): candidates of the target
    modality only, so no cross-modality distractors (an analysis of where the mixed pool costs recall)."""
    out = {}
    for task in local_tasks:
        label = MODALITY_LABELS[task.meta["query_modality"]]
        target = MODALITY_LABELS[task.meta["candidate_modality"]]
        rankings = rank_corpus(task, embeddings.queries[label], embeddings.candidates[target], max(k))
        scores = score_rankings(task, rankings, k)
        out[task.name.split(":", 1)[1]] = {f"recall@{x}": scores[f"recall@{x}"] for x in k}
    return out


def _gap(embeddings: PoolEmbeddings) -> dict[str, dict[str, float]]:
    c = embeddings.candidates
    return modality_gap(c["image"], c["text"], c["fused"])


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class DemoResult:
    """What a run produced: ``results`` (the content of ``results.json``), the test-pool embeddings of every
    model (for plots), and the written file paths."""

    results: dict[str, Any]
    embeddings: dict[str, PoolEmbeddings]
    results_path: str
    plot_path: str | None = None


def _set_threads(config: DemoConfig) -> int:
    threads = config.num_threads or min(2, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    return threads


def run_demo(config: DemoConfig | None = None, *, log: Callable[[str], None] | None = None) -> DemoResult:
    """Run the whole demo and write ``results.json`` (and ``demo.png`` when ``config.plot``) into
    ``config.output_dir``. ``log`` receives one-line stage messages (default: silent). torch's CPU thread
    count is set for the run (``config.num_threads``; results depend on it) and restored afterwards."""
    config = config or DemoConfig()
    previous_threads = torch.get_num_threads()
    try:
        return _run(config, log or (lambda message: None), _set_threads(config))
    finally:
        torch.set_num_threads(previous_threads)


def _run(config: DemoConfig, say: Callable[[str], None], threads: int) -> DemoResult:
    out_dir = Path(config.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = t0 = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        timings[name] = round(now - t0, 2)
        t0 = now

    say(f"corpus: {config.num_train} train pairs, {config.num_test} test items (seed {config.seed})")
    corpus: DemoCorpus = build_demo_corpus(out_dir, config.corpus_config(), progress=config.progress)
    processor = build_demo_processor(image_size=config.backbone.image_size)
    tensors = prepare_train_tensors(corpus.train, processor, progress=config.progress)
    tasks = corpus.tasks(k=(1, 5))
    local_tasks = build_retrieval_tasks(corpus.test, corpus.image_root, pool="local", k=(1, 5))
    lap("corpus")

    models_eval: dict[str, PoolEmbeddings] = {}
    per_model: dict[str, dict[str, Any]] = {}

    def evaluate(key: str, label: str, model: GCLModel, history: list[dict[str, float]], note: str = "") -> None:
        emb = encode_test_pool(model, processor, tasks, batch_size=config.eval_batch_size,
                               progress=config.progress, desc=f"evaluate: {label}")
        models_eval[key] = emb
        per_model[key] = {
            "label": label,
            "note": note,
            "cells": score_cells(tasks, emb),
            "local_pool": score_local_pools(local_tasks, emb),
            "modality_gap": _gap(emb),
            "logit_scale": float(model.logit_scale().detach()),
            "train_loss": history,
        }

    say(f"pre-training the tiny CLIP backbone with the CLIP loss ({config.pretrain_steps} steps)")
    base, history = pretrain(config, tensors, processor.tokenizer)
    lap("pretrain")
    evaluate(PRETRAINED, "pre-trained", base, history)
    lap("evaluate:pretrained")
    for arm in config.arms:
        say(f"fine-tuning with {arm.label} ({config.steps} steps)")
        model, history = finetune(config, base, tensors, arm)
        lap(f"finetune:{arm.key}")
        evaluate(arm.key, arm.label, model, history, arm.note)
        lap(f"evaluate:{arm.key}")
        del model

    timings["total"] = round(time.perf_counter() - start, 2)
    results = {
        "config": config.to_dict(),
        "cells": [f"{q}->{c}" for q, c in CELLS],
        "baseline": config.arms[0].key,
        "models": per_model,
        "environment": {"torch_threads": threads, "torch": torch.__version__, "cuda": torch.cuda.is_available()},
        "timings_s": timings,
    }
    results_path = out_dir / "results.json"
    results_path.write_text(json.dumps(results, indent=2))
    result = DemoResult(results=results, embeddings=models_eval, results_path=str(results_path))
    if config.plot:
        from gcl_hf.demo.report import plot_demo

        result.plot_path = plot_demo(result, out_dir / "demo.png")
    return result


def comparable(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` without what legitimately differs between identical runs (timings, paths)."""
    out = {k: v for k, v in results.items() if k not in ("timings_s",)}
    out["config"] = {k: v for k, v in out["config"].items() if k not in ("output_dir", "progress")}
    return out
