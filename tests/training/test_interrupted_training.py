"""A real training process killed mid-run (SIGTERM between checkpoints, SIGKILL while a checkpoint is being
written) resumes from the last *complete* checkpoint and ends with the losses of an uninterrupted run.

The child (`tests/scripts/train_interrupt_check.py`) announces on stdout where it stopped and then blocks on
stdin; the parent reads that line (bounded by a deadline, no sleeps) and kills it there.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "scripts" / "train_interrupt_check.py"
sys.path.insert(0, str(SCRIPT.parent))
import train_interrupt_check as check  # noqa: E402


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run's loss per step (in this process)."""
    threads = torch.get_num_threads()
    try:
        return check.run(tmp_path_factory.mktemp("uninterrupted"))["losses"]
    finally:
        torch.set_num_threads(threads)


def _start(out: Path, *flags: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", TRANSFORMERS_VERBOSITY="error",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.Popen([sys.executable, str(SCRIPT), str(out), *flags], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)


def _wait_for(proc: subprocess.Popen, text: str, timeout: float = 180.0) -> None:
    """Read the child's output until a line contains ``text`` (the child then blocks until killed)."""
    deadline, seen = time.monotonic() + timeout, []
    while True:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([proc.stdout], [], [], max(remaining, 0))
        if not ready:
            proc.kill()
            pytest.fail(f"no {text!r} from the child within {timeout:.0f} s:\n{''.join(seen)[-3000:]}")
        line = proc.stdout.readline()
        if not line:
            proc.wait()
            pytest.fail(f"the child exited ({proc.returncode}) before {text!r}:\n{''.join(seen)[-3000:]}")
        seen.append(line)
        if text in line:
            return


def _kill(proc: subprocess.Popen, sig: int) -> None:
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == -sig
    proc.stdin.close()
    proc.stdout.close()


def _complete(out: Path) -> list[str]:
    from gcl_hf.training.checkpoints import checkpoint_problem

    return sorted(p.name for p in out.glob("checkpoint-*") if checkpoint_problem(p) is None)


def _resume_in_this_process(out: Path) -> dict:
    threads = torch.get_num_threads()
    try:
        return check.run(out, resume=True)
    finally:
        torch.set_num_threads(threads)


def test_sigterm_between_checkpoints_resumes_from_the_last_one(tmp_path, reference):
    proc = _start(tmp_path, "--hang-at-step", "5")  # checkpoint-4 is complete, step 5 has begun
    _wait_for(proc, "hanging at step 5")
    _kill(proc, signal.SIGTERM)
    assert _complete(tmp_path) == ["checkpoint-2", "checkpoint-4"]
    resumed = _resume_in_this_process(tmp_path)
    assert Path(resumed["resumed_from"]).name == "checkpoint-4"
    assert sorted(resumed["losses"]) == list(range(1, 7))
    for step in range(1, 7):
        assert resumed["losses"][step] == pytest.approx(reference[step], rel=1e-6, abs=1e-7), f"step {step}"


def test_sigkill_while_saving_never_resumes_from_the_half_written_checkpoint(tmp_path, reference, caplog):
    proc = _start(tmp_path, "--hang-in-save", "4")  # checkpoint-4 has its weights, not yet its optimizer state
    _wait_for(proc, "hanging in save 4")
    _kill(proc, signal.SIGKILL)
    assert (tmp_path / "checkpoint-4" / "model.safetensors").is_file()  # half-written, and looks like a checkpoint
    assert _complete(tmp_path) == ["checkpoint-2"]
    with caplog.at_level("WARNING", logger="gcl_hf.training.checkpoints"):
        resumed = _resume_in_this_process(tmp_path)
    assert "checkpoint-4" in caplog.text  # the skipped checkpoint is named
    assert Path(resumed["resumed_from"]).name == "checkpoint-2"
    for step in range(1, 7):
        assert resumed["losses"][step] == pytest.approx(reference[step], rel=1e-6, abs=1e-7), f"step {step}"
    assert _complete(tmp_path) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]  # rewritten, complete this time
