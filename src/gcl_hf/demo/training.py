"""Training for the demo: the train pairs as tensors, and every model trained through `GCLTrainer`.

:func:`prepare_train_tensors` preprocesses the train pairs once (no image decoding per step);
:func:`pretrain` trains a fresh demo backbone with the CLIP loss (the stand-in for an off-the-shelf
checkpoint); :func:`finetune` fine-tunes a copy of it with one :class:`~gcl_hf.demo.config.Arm`'s loss.
Every arm of a seed gets the same steps, batch, learning rate, schedule and data order.
"""

from __future__ import annotations

import copy
import gc
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import torch

from gcl_hf.demo.backbone import build_demo_backbone, normalize_pixels, pixel_values
from gcl_hf.demo.config import PRETRAIN_ARM, Arm, DemoConfig
from gcl_hf.demo.corpus import TrainPairs
from gcl_hf.modeling.model import GCLModel

__all__ = ["TrainTensors", "finetune", "prepare_train_tensors", "pretrain", "train_model"]


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
    """Preprocess every train pair once: pictures normalised as the processor does
    (:func:`~gcl_hf.demo.backbone.normalize_pixels`, in chunks) and captions tokenized. ``train`` is a
    :class:`~gcl_hf.demo.corpus.TrainPairs` (arrays) or a ``datasets.Dataset`` with ``image`` and ``text``."""
    from tqdm.auto import tqdm

    texts = list(train.texts) if isinstance(train, TrainPairs) else list(train["text"][:])
    tokens = processor.tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt")
    chunks = []
    images = None if isinstance(train, TrainPairs) else train.select_columns(["image"])
    for start in tqdm(range(0, len(texts), chunk_size), desc="preprocess train", unit="chunk", disable=not progress):
        if images is None:
            chunks.append(normalize_pixels(torch.from_numpy(train.images[start:start + chunk_size]), processor))
        else:
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


def _progress_callback(desc: str, enabled: bool):
    """A Trainer callback: one tqdm bar per run, the last logged loss in its postfix."""
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
                self.bar.set_postfix(loss=f"{logs['loss']:.3f}")

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.close()

    return _Progress()


def train_model(model: GCLModel, tensors: TrainTensors, arm: Arm, *, steps: int, lr: float, seed: int,
                batch_size: int, weight_decay: float, warmup_steps: int = 0, scheduler: str = "linear",
                desc: str = "train", progress: bool = True) -> list[dict[str, float]]:
    """Train ``model`` in place with :class:`~gcl_hf.training.trainer.GCLTrainer` for ``steps`` AdamW steps on batches
    of ``tensors``, with ``arm``'s loss (``pairs`` and ``negatives`` set explicitly through the
    `GCLTrainingArguments` loss fields, which write them into the model's config); returns the logged losses (``loss`` and ``loss/<pair>``)."""
    from transformers.trainer_callback import ProgressCallback

    from gcl_hf.training.arguments import GCLTrainingArguments
    from gcl_hf.training.trainer import GCLTrainer

    if steps == 0:
        return []
    work_dir = tempfile.mkdtemp(prefix="gcl-demo-trainer-")  # nothing is saved; the Trainer wants a directory
    args = GCLTrainingArguments(
        output_dir=work_dir, max_steps=steps, per_device_train_batch_size=batch_size,
        learning_rate=lr, weight_decay=weight_decay, lr_scheduler_type=scheduler, warmup_steps=warmup_steps,
        seed=seed, data_seed=seed, dataloader_drop_last=True, dataloader_num_workers=0,
        logging_strategy="steps", logging_steps=max(1, steps // 20), save_strategy="no", eval_strategy="no",
        report_to=[], disable_tqdm=False, use_cpu=not torch.cuda.is_available(),
        pairs=arm.pairs, negatives=arm.negatives,
    )
    trainer = GCLTrainer(model=model, args=args, data_collator=_TensorCollator(tensors),
                         train_dataset=_Indices(len(tensors)))
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_progress_callback(desc, progress))
    gc.freeze()  # the Trainer's free_memory() runs gc.collect(): skip the (many) objects alive before training
    try:
        trainer.train()
    finally:
        gc.unfreeze()
        shutil.rmtree(work_dir, ignore_errors=True)
    model.eval()
    # the Trainer's own log history: the training logs' losses (total and per pair), by step
    return [{"step": entry["step"], **{k: float(v) for k, v in entry.items() if k == "loss" or k.startswith("loss/")}}
            for entry in trainer.state.log_history if "loss" in entry]


def pretrain(config: DemoConfig, tensors: TrainTensors, tokenizer: Any, seed: int) -> tuple[GCLModel, list[dict[str, float]]]:
    """A fresh demo backbone (initialised from ``seed``) trained with the plain CLIP loss: the demo's
    "off-the-shelf checkpoint"."""
    backbone = build_demo_backbone(tokenizer, seed=seed, config=config.backbone)
    model = GCLModel.from_backbone(backbone)
    history = train_model(model, tensors, PRETRAIN_ARM, steps=config.pretrain_steps, lr=config.pretrain_lr,
                          seed=seed, batch_size=config.batch_size, weight_decay=config.weight_decay,
                          warmup_steps=min(config.pretrain_warmup_steps, config.pretrain_steps),
                          scheduler="cosine", desc=f"seed {seed}: pre-train (CLIP loss)", progress=config.progress)
    return model, history


def finetune(config: DemoConfig, start: GCLModel, tensors: TrainTensors, arm: Arm,
             seed: int) -> tuple[GCLModel, list[dict[str, float]]]:
    """A copy of ``start`` fine-tuned with ``arm``'s loss (same steps, batch, lr and data order — from
    ``seed`` — for every arm)."""
    model = copy.deepcopy(start)
    history = train_model(model, tensors, arm, steps=config.steps, lr=config.lr, seed=seed + 1,
                          batch_size=config.batch_size, weight_decay=config.weight_decay, scheduler="linear",
                          desc=f"seed {seed}: fine-tune {arm.label}", progress=config.progress)
    return model, history
