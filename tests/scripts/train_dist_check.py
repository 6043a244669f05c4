"""Train a tiny GCL model for a few steps with GCLTrainer; under torchrun / accelerate launch or alone.

    python -m torch.distributed.run --standalone --nproc_per_node 2 train_dist_check.py OUT --world 2
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 train_dist_check.py OUT --world 2

Every variant sees the same *global* batch per optimizer step whatever the number of processes
(per-device batch = GLOBAL_BATCH / world), so the final weights must match a one-process run.
Rank 0 writes ``OUT/<variant>_w<world>.pt`` with the final weights, the logged losses and the
dataset rows each process trained on.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path

import numpy as np
import torch

GLOBAL_BATCH = 8
NUM_ROWS = 16
#: name -> (gradient_cache_chunk_size, gradient_accumulation_steps); the global micro-batch is GLOBAL_BATCH / accum
VARIANTS = {"plain": (None, 1), "cache": (2, 1), "accum_cache": (1, 2)}


def dataset():
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(NUM_ROWS)]
    texts = [f"picture {i}: {'red' if i % 2 else 'blue'} {'square' if i % 3 else 'circle'}" for i in range(NUM_ROWS)]
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    return datasets.Dataset.from_dict({"image": images, "text": texts}, features=features)


class RecordingCollator:
    """The default collator, remembering which dataset rows it collated (``__index__``)."""

    def __init__(self, inner):
        self.inner, self.rows = inner, []

    def __call__(self, records):
        self.rows.append([r["__index__"] for r in records])
        return self.inner(records)


def run_variant(out: Path, variant: str, world: int) -> dict:
    from gcl_hf import GCLModel
    from gcl_hf.data.collator import GCLCollator
    from gcl_hf.testing import tiny_clip, tiny_processor
    from gcl_hf.training.trainer import GCLTrainer
    from gcl_hf.training.arguments import GCLTrainingArguments

    chunk, accum = VARIANTS[variant]
    processor = tiny_processor()
    collator = RecordingCollator(GCLCollator(processor))
    args = GCLTrainingArguments(
        output_dir=str(out / f"{variant}_w{world}"),
        per_device_train_batch_size=GLOBAL_BATCH // accum // world,
        gradient_accumulation_steps=accum,
        gradient_cache_chunk_size=chunk,
        max_steps=NUM_ROWS // GLOBAL_BATCH,
        optim="sgd",  # plain SGD: Adam would amplify float noise in (mathematically) zero gradients
        learning_rate=0.5,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        ddp_backend="gloo" if world > 1 else None,
        dataloader_num_workers=0,
        seed=0,
        disable_tqdm=True,
    )
    model = GCLModel.from_backbone(tiny_clip(seed=0))
    trainer = GCLTrainer(model, args, train_dataset=dataset(), processing_class=processor, data_collator=collator)
    if trainer.accelerator.num_processes != world:
        raise SystemExit(f"expected {world} processes, the trainer runs {trainer.accelerator.num_processes}")
    trainer.train()
    rows = [None] * world
    if world > 1:
        torch.distributed.all_gather_object(rows, collator.rows)
    else:
        rows = [collator.rows]
    result = {
        "world_size": trainer.accelerator.num_processes,
        "weights": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "pair_losses": [{k: v for k, v in h.items() if k.startswith("loss/")} for h in trainer.state.log_history
                        if "loss" in h],
        "rows": rows,
    }
    if trainer.accelerator.is_main_process:
        torch.save(result, out / f"{variant}_w{world}.pt")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--world", type=int, required=True, help="number of processes this run must have")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    ns = parser.parse_args(argv)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != ns.world:
        raise SystemExit(f"launched with WORLD_SIZE={launched}, expected {ns.world}")
    torch.set_num_threads(1)
    ns.out.mkdir(parents=True, exist_ok=True)
    for variant in ns.variants.split(","):
        run_variant(ns.out, variant, ns.world)
    if torch.distributed.is_initialized():  # a clean teardown: a live gloo group can abort a process at exit
        gc.collect()  # the trainers' DDP modules first (see `GCLTrainer.end_training`; several trainers ran here)
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
