"""GCLTrainer's retrieval evaluation under torchrun (or alone): the rows each process embeds, and the metrics.

    python -m torch.distributed.run --standalone --nproc_per_node 2 eval_dist_check.py OUT

A task of NUM_CORPUS image candidates and NUM_QUERIES text queries (images written as PNG files under OUT) is
scored by ``trainer.evaluate()``. Forward hooks on the backbone's vision and text towers count the rows each
process embeds. Each rank writes ``OUT/eval_w<world>_rank<r>.json``: rank, world size, ``image_rows``,
``text_rows`` and the metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

NUM_CORPUS = 11  # odd: the two shards differ in size
NUM_QUERIES = 7


def build_task(root: Path):
    import datasets
    from PIL import Image

    from gcl_hf.benchmarks.task import RetrievalTask

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    corpus = []
    for i in range(NUM_CORPUS):
        path = root / "images" / f"c{i}.png"
        if not path.exists():
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        corpus.append({"id": f"c{i}", "text": None, "image": f"images/c{i}.png", "modality": "image"})
    queries = [{"id": f"q{i}", "text": f"picture {i}: {'red' if i % 2 else 'blue'} square", "image": None,
                "modality": "text"} for i in range(NUM_QUERIES)]
    qrels = {f"q{i}": {f"c{i}", f"c{(3 * i + 1) % NUM_CORPUS}"} for i in range(NUM_QUERIES)}
    return RetrievalTask("dist_eval", datasets.Dataset.from_list(queries), datasets.Dataset.from_list(corpus), qrels,
                         k=(1, 3, 5), image_root=str(root))


def run(out: Path) -> dict:
    """Evaluate on this process (one of a launch, or alone); returns this rank's record (also written)."""
    from gcl_hf import GCLModel
    from gcl_hf.testing import tiny_clip, tiny_processor
    from gcl_hf.training.arguments import GCLTrainingArguments
    from gcl_hf.training.trainer import GCLTrainer

    world = int(os.environ.get("WORLD_SIZE", "1"))
    args = GCLTrainingArguments(output_dir=str(out / f"trainer_w{world}"), per_device_eval_batch_size=2,
                                report_to=[], use_cpu=True, ddp_backend="gloo" if world > 1 else None,
                                dataloader_num_workers=0, disable_tqdm=True, seed=0)
    model = GCLModel.from_backbone(tiny_clip(seed=0))
    trainer = GCLTrainer(model, args, processing_class=tiny_processor(), eval_tasks=[build_task(out)])
    counts = {"image_rows": 0, "text_rows": 0}

    def counter(key):
        def hook(module, inputs, output):
            counts[key] += int(output[0].shape[0])
        return hook

    backbone = model.backbone
    handles = [backbone.vision_model.register_forward_hook(counter("image_rows")),
               backbone.text_model.register_forward_hook(counter("text_rows"))]
    try:
        metrics = trainer.evaluate()
    finally:
        for handle in handles:
            handle.remove()
    rank = trainer.accelerator.process_index
    record = {"rank": rank, "world_size": trainer.accelerator.num_processes, **counts,
              "metrics": {k: v for k, v in metrics.items() if "dist_eval" in k}}
    (out / f"eval_w{world}_rank{rank}.json").write_text(json.dumps(record))
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    run(args.out)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
