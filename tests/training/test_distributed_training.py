"""Two CPU processes (torchrun, accelerate launch; gloo) train to the weights of one process on the combined batch.

`tests/scripts/train_dist_check.py` runs GCLTrainer for two optimizer steps of a global batch of 8 pairs
(per-device batch 4 on two processes, 8 on one), with plain SGD so that float noise is not amplified by Adam's
normalisation of (mathematically) zero gradients. Variants: plain DDP, gradient cache (chunks of 2) and
gradient accumulation (2 micro-batches) with the gradient cache.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "scripts" / "train_dist_check.py"
TOL = 1e-5

sys.path.insert(0, str(SCRIPT.parent))
import train_dist_check  # noqa: E402


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", TRANSFORMERS_VERBOSITY="error",
                ACCELERATE_USE_CPU="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=_env(), cwd=ROOT)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: one process, per-device batch 8 (run in this process)."""
    out = tmp_path_factory.mktemp("one_process")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {v: train_dist_check.run_variant(out, v, world=1) for v in train_dist_check.VARIANTS}
    finally:
        torch.set_num_threads(threads)


def _compare(reference: dict, got: dict, variant: str) -> float:
    assert got["world_size"] == 2
    # the two processes together saw exactly the one-process batches
    for step, rows in enumerate(reference["rows"][0]):
        accum = train_dist_check.VARIANTS[variant][1]
        assert sorted(rows) == sorted(got["rows"][0][step] + got["rows"][1][step]), f"step {step // accum}"
    diff = max((got["weights"][k] - reference["weights"][k]).abs().max().item() for k in reference["weights"])
    assert diff < TOL, f"{variant}: 2 processes vs 1: max |Δweight| = {diff:.3g}"
    assert got["losses"] == pytest.approx(reference["losses"], rel=1e-5)
    for ref, pairs in zip(reference["pair_losses"], got["pair_losses"]):
        assert pairs.keys() == ref.keys() and pairs == pytest.approx(ref, rel=1e-5)
    return diff


def test_torchrun_two_processes_match_one_process(tmp_path, one_process):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT),
           str(tmp_path), "--world", "2"]
    _run(cmd)
    initial = _initial_weights()
    for variant in train_dist_check.VARIANTS:
        got = torch.load(tmp_path / f"{variant}_w2.pt", weights_only=True)
        diff = _compare(one_process[variant], got, variant)
        moved = max((got["weights"][k] - initial[k]).abs().max().item() for k in initial)
        assert moved > 1e-2, "the weights must move for the comparison to mean anything"
        print(f"torchrun {variant}: max |Δweight| 2 vs 1 process = {diff:.2e} (weights moved up to {moved:.2e})")


def test_accelerate_launch_two_processes_match_one_process(tmp_path, one_process):
    config = ROOT / "examples" / "accelerate_config.yaml"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
           "--main_process_port", str(_free_port()), str(SCRIPT), str(tmp_path), "--world", "2", "--variants", "cache"]
    _run(cmd)
    got = torch.load(tmp_path / "cache_w2.pt", weights_only=True)
    diff = _compare(one_process["cache"], got, "cache")
    print(f"accelerate launch cache: max |Δweight| 2 vs 1 process = {diff:.2e}")


def _initial_weights() -> dict[str, torch.Tensor]:
    from gcl_hf import GCLModel
    from gcl_hf.testing import tiny_clip

    return GCLModel.from_backbone(tiny_clip(seed=0)).state_dict()
