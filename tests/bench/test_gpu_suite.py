"""`bench/gpu_suite.py --dry-run`: the GPU suite's code at tiny sizes on the CPU, as on the device image.

The device image has torch, transformers, peft and accelerate but neither ``datasets`` nor ``evaluate``; the
run below hides both (a meta-path wrapper that makes every finder answer "not found" for them, as if they were
not installed: ``importlib.util.find_spec`` returns None and ``import`` raises ModuleNotFoundError), so the suite
cannot rot into needing them. Our code is not replaced: every figure runs the real gcl_hf paths.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "bench" / "gpu_suite.py"

HIDE = '''
import sys
HIDDEN = {"datasets", "evaluate"}
class _Hide:
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        find = getattr(self.finder, "find_spec", None)
        return find(name, path, target) if find else None
    def __getattr__(self, attr):
        return getattr(self.finder, attr)
sys.meta_path[:] = [_Hide(f) for f in sys.meta_path]
'''
RUN_SUITE = '''
import runpy
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''

#: the spec's GPU figures (issue 23): each must have its line
CORE = [
    "throughput/vit-b32", "step_ratio/vit-b32", "grad_cache_memory/vit-b32", "grad_cache_time/vit-b32",
    "encode_ready_images/vit-b32", "encode_ready_texts/vit-b32", "encode_decode_images/vit-b32",
    "encode_decode_texts/vit-b32", "search/exact_topk", "search_check/exact_topk",
    "encode_ready_images/tinyclip-8m-16", "encode_ready_images/siglip2-base", "step_ratio/siglip2-base",
]
WITH_TARGET = ("throughput/", "step_ratio/", "grad_cache_memory/", "grad_cache_time/", "search/", "search_check/")
COMMON_KEYS = {"bench", "figure", "status", "device", "torch", "command", "dry_run", "date"}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def test_the_blocker_hides_datasets_and_evaluate():
    for name in ("datasets", "evaluate"):
        code = HIDE + f"import importlib.util\nassert importlib.util.find_spec({name!r}) is None\nimport {name}\n"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60)
        assert proc.returncode != 0 and f"ModuleNotFoundError: No module named '{name}'" in proc.stderr, proc.stderr


def test_dry_run_writes_a_line_for_every_figure_without_datasets_or_evaluate(tmp_path):
    """The device image has neither datasets nor evaluate: the dry run hides both, as that image does."""
    out = tmp_path / "results.jsonl"
    headline = [ROOT / "bench" / "results.jsonl", ROOT / "bench" / "results-quick.jsonl"]
    before = [_digest(p) for p in headline]
    args = [str(SUITE), "--dry-run", "--out", str(out)]
    cmd = [sys.executable, "-c", HIDE + RUN_SUITE, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600, cwd=ROOT)
    log = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, log
    assert [_digest(p) for p in headline] == before, "a dry run must not write the headline results"

    plan = json.loads(next(line[5:] for line in proc.stdout.splitlines() if line.startswith("PLAN ")))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    by_figure = {line["figure"]: line for line in lines}
    assert sorted(by_figure) == sorted(plan) and len(lines) == len(plan), log
    assert set(CORE) <= set(plan)
    vista = None  # hidden packages: whether VISTA builds is the dry run's own report
    for line in lines:
        assert COMMON_KEYS <= set(line), line
        assert line["bench"] == "gpu_suite" and line["dry_run"] is True and line["device"].startswith("cpu")
        assert line["pass"] is None if "pass" in line else True  # targets are GPU targets
        if line["figure"].endswith("/vista-base") and line["status"] == "skipped":
            assert "gcl_hf.modeling.vista" in line["reason"] and vista is not True, line
            continue
        assert line["status"] == "ok", line
        assert isinstance(line["value"], (int, float)) and math.isfinite(line["value"]) and line["unit"], line
        assert {"ratio", "target", "reference"} <= set(line)
        if line["figure"].startswith(WITH_TARGET):
            assert line["target"], line
        if line["figure"].startswith(WITH_TARGET[:-1]):  # every target figure but the top-k check is a ratio
            assert isinstance(line["ratio"], float) and line["ratio"] > 0, line
