"""Two processes train a tiny GCL model; at step 2 only rank 1's gradient turns NaN. Both must stop before the update.

    python -m torch.distributed.run --nproc_per_node 2 guard_dist_check.py OUT

The NaN is written into rank 1's ``visual_projection.weight.grad`` after DDP's all-reduce (a trainer subclass,
just before the gradient norm, where the guard checks), so rank 0's gradients stay finite: only the guard's
all-reduce can tell rank 0 to stop. Each rank writes ``OUT/rank<r>.json``: the error it raised,
its step, the parameters it named, how far its weights moved since the end of step 1, and what
`GCLTrainer.end_training` left alive (DDP modules, the process group).
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel


def main(out: Path) -> int:
    from transformers import TrainerCallback

    from gcl_hf import GCLModel
    from gcl_hf.testing import tiny_clip, tiny_processor
    from gcl_hf.training.arguments import GCLTrainingArguments
    from gcl_hf.training.guard import NonFiniteTrainingError
    from gcl_hf.training.trainer import GCLTrainer
    from train_dist_check import dataset

    torch.set_num_threads(1)
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    class PoisonRankOne(GCLTrainer):
        def _get_grad_norm(self, model, grad_norm=None):
            if self.state.global_step + 1 == 2 and torch.distributed.get_rank() == 1:
                self.model.backbone.visual_projection.weight.grad[0, 0] = float("nan")
            return super()._get_grad_norm(model, grad_norm=grad_norm)

    class Snapshots(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            snapshots[state.global_step] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    args = GCLTrainingArguments(
        output_dir=str(out / "run"), per_device_train_batch_size=4, max_steps=4, learning_rate=1e-2,
        max_grad_norm=0.0, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, ddp_backend="gloo",
        ddp_timeout=60, dataloader_num_workers=0, seed=0, disable_tqdm=True,
    )
    trainer = PoisonRankOne(GCLModel.from_backbone(tiny_clip(seed=0)), args, train_dataset=dataset(),
                            processing_class=tiny_processor(), callbacks=[Snapshots()])
    rank = torch.distributed.get_rank()
    result: dict = {"error": None}
    try:
        trainer.train()
    except NonFiniteTrainingError as exc:
        moved = max((v - snapshots[1][k]).abs().max().item() for k, v in trainer.model.state_dict().items())
        result = {"error": type(exc).__name__, "message": str(exc), "step": exc.step,
                  "parameters": getattr(exc, "parameters", None), "global_step": trainer.state.global_step,
                  "weights_changed_since_step_1": moved}
    # the teardown under test: DDP's module is freed before the group (freed after it, the gloo group's destructor
    # could deadlock at exit: about 1 run in 10 on a loaded 2-core machine before end_training existed)
    trainer.end_training()
    result["ddp_modules_alive"] = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
    result["group_alive"] = torch.distributed.is_initialized()
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main(Path(sys.argv[1])))
