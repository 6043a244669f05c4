"""Train a tiny GCL model for 6 steps (a checkpoint every 2); optionally stop at a chosen point and wait to be killed.

    python train_interrupt_check.py OUT [--hang-at-step K | --hang-in-save K] [--resume]

``--hang-at-step K``: at the start of step K, print ``hanging at step K`` and block reading stdin (the parent kills
the process there). ``--hang-in-save K``: while writing ``checkpoint-K``, after the model weights and before the
optimizer state, print ``hanging in save K`` and block: a kill there leaves a half-written checkpoint.
Otherwise it trains to the end (``--resume``: from the last complete checkpoint) and writes ``OUT/result.json``
with the loss of every step and the checkpoint it resumed from. `run` does the same in-process.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

MAX_STEPS, SAVE_STEPS = 6, 2


def _announce_and_block(message: str) -> None:
    print(message, flush=True)
    sys.stdin.readline()  # the parent never writes: this process waits here until it is killed
    raise SystemExit(f"{message}: stdin closed before the process was killed")


def build(out: Path, *, hang_at_step: int | None = None, hang_in_save: int | None = None):
    from transformers import TrainerCallback

    from gcl_hf import GCLModel
    from gcl_hf.testing import tiny_clip, tiny_processor
    from gcl_hf.training.arguments import GCLTrainingArguments
    from gcl_hf.training.trainer import GCLTrainer
    from train_dist_check import dataset

    class HangAtStep(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step + 1 == hang_at_step:
                _announce_and_block(f"hanging at step {hang_at_step}")

    class Trainer(GCLTrainer):
        def _save_optimizer_and_scheduler(self, output_dir):
            if self.state.global_step == hang_in_save:
                _announce_and_block(f"hanging in save {hang_in_save}")
            super()._save_optimizer_and_scheduler(output_dir)

    model = GCLModel.from_backbone(tiny_clip(seed=0))
    for module in model.modules():  # dropout, so that resuming must also restore the random state
        if isinstance(getattr(module, "dropout", None), float):
            module.dropout = 0.2
    args = GCLTrainingArguments(
        output_dir=str(out), per_device_train_batch_size=4, max_steps=MAX_STEPS, learning_rate=5e-3,
        save_strategy="steps", save_steps=SAVE_STEPS, logging_steps=1, report_to=[], use_cpu=True,
        dataloader_num_workers=0, seed=0, disable_tqdm=True,
    )
    return Trainer(model, args, train_dataset=dataset(), processing_class=tiny_processor(),
                   callbacks=[HangAtStep()] if hang_at_step else [])


def losses(trainer) -> dict[int, float]:
    return {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}


def run(out: Path, *, resume: bool = False, **hang) -> dict:
    torch.set_num_threads(1)
    trainer = build(out, **hang)
    trainer.train(resume_from_checkpoint="last" if resume else None)
    result = {"losses": losses(trainer), "resumed_from": getattr(trainer, "resumed_from", None)}
    (out / "result.json").write_text(json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--hang-at-step", type=int)
    parser.add_argument("--hang-in-save", type=int)
    parser.add_argument("--resume", action="store_true")
    ns = parser.parse_args(argv)
    run(ns.out, resume=ns.resume, hang_at_step=ns.hang_at_step, hang_in_save=ns.hang_in_save)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
