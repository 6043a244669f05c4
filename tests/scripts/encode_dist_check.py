"""Encode a pool file with every process of a launch; under torchrun / accelerate launch or alone.

    python -m torch.distributed.run --standalone --nproc_per_node 2 encode_dist_check.py OUT \\
        --model MODEL_DIR --pool POOL.jsonl [--shard-size 5] [--batch-size 4]

Three steps, in the same processes:

1. the library: :func:`gcl_hf.retrieval.distributed_encoding.encode_corpus_distributed` into ``OUT/cache_lib``;
   each rank writes ``OUT/lib_rank{r}.json`` (its summary, world size, and a digest of the full
   embeddings it sees after the barrier); then the in-memory
   :func:`~gcl_hf.retrieval.distributed_encoding.encode_dataset_sharded` (``OUT/sharded_rank{r}.npy`` / ``.json``);
2. the command line: ``gcl_hf.cli.encode.main`` into ``OUT/cache_cli`` (summary ``OUT/cli.json``);
3. a disagreement: the last rank drops a row of the pool; every rank must raise (``OUT/mismatch_rank{r}.txt``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--model", required=True)
    p.add_argument("--pool", required=True)
    p.add_argument("--shard-size", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--skip-mismatch", action="store_true")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    import datasets
    import numpy as np
    from transformers import AutoProcessor

    from gcl_hf import hub
    from gcl_hf.cli.encode import load_pool_file
    from gcl_hf.cli.encode import main as cli_main
    from gcl_hf.retrieval.distributed_encoding import (encode_corpus_distributed, encode_dataset_sharded,
                                                       init_distributed, main_process_first)

    datasets.disable_progress_bars()
    info = init_distributed()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    image_root = str(Path(args.pool).resolve().parent)
    model = hub.load(args.model)
    processor = AutoProcessor.from_pretrained(args.model)
    with main_process_first():
        dataset = load_pool_file(args.pool, cache_dir=out / "data_cache")

    # 1. library
    run = encode_corpus_distributed(model, processor, dataset, cache_dir=out / "cache_lib", image_root=image_root,
                                    batch_size=args.batch_size, shard_size=args.shard_size, show_progress=False)
    full = run.embeddings.to_numpy()
    record = dict(run.summary(), rank=info.rank, world_size=info.world_size,
                  digest=hashlib.sha256(full.tobytes()).hexdigest(), shape=list(full.shape))
    (out / f"lib_rank{info.rank}.json").write_text(json.dumps(record))

    # 1b. in memory, each rank a contiguous shard, every rank all rows
    sharded = encode_dataset_sharded(model, processor, dataset, image_root=image_root, batch_size=args.batch_size,
                                     show_progress=False)
    np.save(out / f"sharded_rank{info.rank}.npy", sharded.embeddings.numpy())
    (out / f"sharded_rank{info.rank}.json").write_text(json.dumps({"encoded_rows": sharded.encoded_rows}))

    # 2. command line, in the same process group
    code = cli_main(["--model", args.model, "--pool", args.pool, "--cache-dir", str(out / "cache_cli"),
                     "--data-cache", str(out / "data_cache"), "--shard-size", str(args.shard_size),
                     "--batch-size", str(args.batch_size), "--output", str(out / "cli.json"), "--quiet"])
    assert code == 0

    # 3. processes that disagree on the dataset must all fail, not mix two caches
    if not args.skip_mismatch:
        mine = dataset.select(range(len(dataset) - 1)) if info.rank == info.world_size - 1 else dataset
        try:
            encode_corpus_distributed(model, processor, mine, cache_dir=out / "cache_mismatch", image_root=image_root,
                                      batch_size=args.batch_size, shard_size=args.shard_size, show_progress=False)
            message = "no error"
        except RuntimeError as exc:
            message = str(exc)
        (out / f"mismatch_rank{info.rank}.txt").write_text(message)
    if info.world_size > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
