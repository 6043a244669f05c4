"""Two real processes (torchrun, gloo, CPU) give the one-process GCL loss and gradients.

Relation asserted, for every option (modality/all negatives, softmax/sigmoid, weights, subsets):
- loss: the mean of the two ranks' losses equals the one-process loss on the concatenated batch
  (each rank returns the mean over its own anchors; local batches are equal);
- embeddings: rank r's gradient for its rows equals `world_size ×` the one-process gradient of
  those rows (the gather's backward sums the contributions of every rank's loss, and the
  one-process loss is the *mean* of the rank losses); DDP's division of parameter gradients
  by world_size then yields exactly the one-process parameter gradient;
- replicated scalars (logit_scale, logit_bias): the mean over ranks of their gradients (what
  DDP's averaging computes) equals the one-process gradient.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parents[1] / "scripts" / "dist_loss_check.py"
WORLD = 2
TOL = 1e-12  # float64 everywhere


def _load_script():
    spec = importlib.util.spec_from_file_location("dist_loss_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("dist_loss")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
           str(SCRIPT), str(outdir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    ranks = [torch.load(outdir / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    return ranks


def test_two_processes_match_one_process(two_process_run):
    script = _load_script()
    ranks = two_process_run
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == WORLD for r in ranks)
    batch = ranks[0]["batch"]
    single = script.run_options(batch, 0, script.GLOBAL_N)  # torch.distributed not initialised here
    n = script.GLOBAL_N // WORLD
    assert set(single) == set(script.OPTIONS) == set(ranks[0]["results"])

    worst: dict[str, float] = {}
    for name, ref in single.items():
        per_rank = [r["results"][name] for r in ranks]
        diffs = {}
        mean_loss = sum(r["loss"] for r in per_rank) / WORLD
        diffs["loss"] = (mean_loss - ref["loss"]).abs().item()
        for key, value in ref["pair_losses"].items():
            mean_pair = sum(r["pair_losses"][key] for r in per_rank) / WORLD
            diffs[f"pair {key}"] = (mean_pair - value).abs().item()
        for m in ("image", "text", "fused"):
            key = f"{m}_grad"
            assert (key in ref) == all(key in r for r in per_rank), (name, key)
            if key not in ref:
                continue
            for r, res in enumerate(per_rank):
                assert res[key].abs().max() > 0, f"{name}: rank {r} got no gradient for {m}"
                expected = WORLD * ref[key][r * n:(r + 1) * n]
                diffs[f"{key} rank{r}"] = (res[key] - expected).abs().max().item()
        for key in ("scale_grad", "bias_grad"):
            if key in ref:
                mean_grad = sum(r[key] for r in per_rank) / WORLD
                diffs[key] = (mean_grad - ref[key]).abs().item()
        bad = {k: v for k, v in diffs.items() if not v <= TOL}
        assert not bad, f"{name}: 2-process vs 1-process differences above {TOL}: {bad}"
        worst[name] = max(diffs.values())
    print("max abs difference 2-process vs 1-process:", worst)


def test_ranks_see_different_halves(two_process_run):
    """The comparison above is not vacuous: the two ranks really computed different local losses."""
    for name in two_process_run[0]["results"]:
        l0, l1 = (r["results"][name]["loss"] for r in two_process_run)
        assert (l0 - l1).abs() > 1e-6, name


def test_unequal_local_batches_raise_on_every_rank(two_process_run):
    for r in two_process_run:
        msg = r["unequal_error"]
        assert "same tensor shape on every process" in msg, msg
        assert "rank 0: [3, " in msg and "rank 1: [4, " in msg, msg
