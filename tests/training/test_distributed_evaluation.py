"""GCLTrainer's retrieval evaluation under DDP (two CPU processes, torchrun, gloo): each process embeds only its
shard of the corpus and of the queries, and both report the metrics of a one-process evaluation.

`tests/scripts/eval_dist_check.py` counts the rows the vision and text towers embed on each process (forward
hooks) while ``trainer.evaluate()`` scores an 11-image corpus against 7 text queries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "scripts" / "eval_dist_check.py"

sys.path.insert(0, str(SCRIPT.parent))
import eval_dist_check

from gcl_hf.retrieval.distributed_encoding import shard_rows


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", TRANSFORMERS_VERBOSITY="error",
                ACCELERATE_USE_CPU="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def test_two_processes_each_encode_a_shard_and_report_the_one_process_metrics(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = eval_dist_check.run(tmp_path)
    finally:
        torch.set_num_threads(threads)
    assert alone["image_rows"] == eval_dist_check.NUM_CORPUS and alone["text_rows"] == eval_dist_check.NUM_QUERIES
    assert set(alone["metrics"]) >= {"eval_dist_eval_recall@1", "eval_dist_eval_recall@5"}

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT),
           str(tmp_path)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=240, env=_env(), cwd=ROOT)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    ranks = [json.loads((tmp_path / f"eval_w2_rank{r}.json").read_text()) for r in range(2)]
    for r, got in enumerate(ranks):
        assert got["world_size"] == 2
        # this process's towers saw its shard only: 5 or 6 of the 11 images, 3 or 4 of the 7 queries
        assert got["image_rows"] == len(shard_rows(eval_dist_check.NUM_CORPUS, r, 2)), got
        assert got["text_rows"] == len(shard_rows(eval_dist_check.NUM_QUERIES, r, 2)), got
    assert ranks[0]["metrics"] == ranks[1]["metrics"]  # the same gathered embeddings ranked on both
    assert ranks[0]["metrics"] == pytest.approx(alone["metrics"])
    print(f"rows embedded per rank (images, texts): {[(g['image_rows'], g['text_rows']) for g in ranks]}; "
          f"one process: ({alone['image_rows']}, {alone['text_rows']}); metrics {ranks[0]['metrics']}")
