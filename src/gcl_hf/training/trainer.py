"""`GCLTrainer`: the transformers `Trainer` for GCL fine-tuning of CLIP-like backbones.

What it adds to `Trainer` (paired with `GCLTrainingArguments`, as trl pairs its configs and trainers):

- the GCL loss (`GCLModel.forward(return_loss=True)`), with each directed pair's loss logged as
  ``loss/image->text`` etc. (running means over the logging window, averaged over processes);
- LoRA through peft (``peft_config=LoraConfig(...)`` or the ``lora_*`` argument shortcuts), the temperature
  trainable or frozen (``train_logit_scale``), towers frozen on request;
- the gradient cache (``gradient_cache_chunk_size``, see `gcl_hf.training.grad_cache`), including under DDP;
- a NaN guard: a non-finite loss raises `NonFiniteLossError` naming the step and the pairs, a non-finite gradient
  (with a finite loss) `NonFiniteGradientError` naming the parameters, both before the optimizer step, on every
  process at once, with the ids of the batch's records (see `gcl_hf.training.guard`);
- complete checkpoints only: a marker written once every file of a checkpoint is on disk, and
  ``train(resume_from_checkpoint=True | "last")`` resumes from the newest complete one; model weights are read
  from safetensors only unless ``allow_pickle`` (`gcl_hf.training.checkpoints`); the Hub token is never written;
- retrieval evaluation: ``eval_tasks=[RetrievalTask, ...]`` makes ``evaluate()`` report
  ``eval_<task>_recall@5`` etc. (through `gcl_hf.retrieval.evaluation.evaluate_retrieval`).

Multi-process training (``torchrun`` / ``accelerate launch``) needs nothing special: the loss gathers the
candidates from every process, and DDP's gradient averaging then gives the one-process gradient of the
concatenated batch (see `gcl_hf.losses.gcl`). With gradient accumulation the negatives come from one micro-batch
(gathered over processes); use the gradient cache for a larger contrastive batch. Call `GCLTrainer.end_training`
last in such a script (``gcl-hf train`` does).
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainingArguments

from gcl_hf.data.records import SKIPPED_KEY, with_row_index
from gcl_hf.hub.adapter import load_adapter, save_adapter
from gcl_hf.losses.settings import resolve_negatives
from gcl_hf.modeling.model import GCLModel
from gcl_hf.modeling.towers import freeze_towers
from gcl_hf.training.arguments import GCLTrainingArguments
from gcl_hf.training.batch import check_contrastive_batch, drop_last_batch_without_negatives
from gcl_hf.training.checkpoints import CompleteCheckpointsMixin
from gcl_hf.training.reports import RetrievalReportsMixin
from gcl_hf.training.grad_cache import cached_gradient_step
from gcl_hf.training.guard import NonFiniteGradientError, NonFiniteGuard, NonFiniteLossError, RecordIdCollator

__all__ = ["GCLTrainer", "NonFiniteGradientError", "NonFiniteLossError", "freeze_towers", "load_adapter",
           "save_adapter"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- trainer


def _as_gcl_args(args: TrainingArguments | None) -> GCLTrainingArguments:
    if args is None:
        return GCLTrainingArguments(output_dir="gcl-output")
    if isinstance(args, GCLTrainingArguments):
        return args
    if isinstance(args, TrainingArguments):
        raise TypeError(
            "GCLTrainer needs GCLTrainingArguments (a TrainingArguments subclass with the GCL fields); "
            "build one with the same keyword arguments"
        )
    raise TypeError(f"args must be GCLTrainingArguments, got {type(args).__name__}")


class GCLTrainer(RetrievalReportsMixin, CompleteCheckpointsMixin, Trainer):
    """`Trainer` for `GCLModel` on image–caption pairs (see the module docstring).

    Args:
        model: a `GCLModel`, a CLIP-like backbone instance, or a checkpoint name/path of one (wrapped with
            ``GCLModel.from_backbone(..., **args.model_overrides())``: a SigLIP backbone trains with its sigmoid
            objective unless ``args.objective`` says otherwise).
        args: `GCLTrainingArguments`.
        data_collator: defaults to ``GCLCollator.for_model(model, processing_class, ...)`` (decodes images in the
            dataloader workers, tokenizes captions to the text tower's length).
        train_dataset, eval_dataset: datasets of image–caption records (``image_column``, ``caption_column``);
            an ``eval_dataset`` is scored with the GCL loss (``eval_loss`` and ``eval_loss/<pair>``).
        processing_class: the backbone's processor (e.g. ``CLIPProcessor``), used by the default collator and
            by retrieval evaluation, and saved with checkpoints.
        peft_config: a peft ``LoraConfig`` applied to the backbone (trl's convention); overrides ``args.lora_*``.
        eval_tasks: `RetrievalTask`s scored by ``evaluate()``: ``eval_<task.name>_recall@<k>``.
        **kwargs: passed to `Trainer` (callbacks, optimizers, ...).
    """

    def __init__(
        self,
        model: GCLModel | PreTrainedModel | str | None = None,
        args: GCLTrainingArguments | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        peft_config: Any = None,
        eval_tasks: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        args = _as_gcl_args(args)
        if args.remove_unused_columns:
            logger.warning("remove_unused_columns=True would drop the image and caption columns before the "
                           "collator; GCLTrainer sets it to False")
            args.remove_unused_columns = False
        if model is None:
            raise ValueError("GCLTrainer needs a model (a GCLModel, a CLIP-like backbone or a checkpoint name)")
        model = self._as_gcl_model(model, args)
        self._configure_model(model, args, peft_config)
        if data_collator is None:
            if processing_class is None:
                raise ValueError("GCLTrainer needs processing_class (the backbone's processor) or a data_collator")
            data_collator = self._default_collator(model, processing_class, args)
        data_collator = RecordIdCollator(data_collator)
        train_dataset = with_row_index(train_dataset)
        eval_dataset = with_row_index(eval_dataset)
        self._skipped = {"train": 0, "eval": 0}
        self.eval_tasks = list(eval_tasks or [])
        self._pair_sums: dict[str, dict[str, torch.Tensor]] = {"train": {}, "eval": {}}
        self._pair_counts: dict[str, int] = {"train": 0, "eval": 0}
        self._in_evaluate = False
        self._last_retrieval: dict[str, dict[str, float]] = {}  # task → metrics, for the model card
        self._nan_guard = NonFiniteGuard(enabled=args.nan_guard)

        # Trainer refuses an eval strategy without an eval_dataset; retrieval tasks are evaluation data too.
        restore_strategy = None
        strategy = str(getattr(args.eval_strategy, "value", args.eval_strategy))
        if self.eval_tasks and eval_dataset is None and strategy != "no":
            restore_strategy, args.eval_strategy = args.eval_strategy, "no"
        try:
            super().__init__(
                model=model,
                args=args,
                data_collator=data_collator,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                **kwargs,
            )
        finally:
            if restore_strategy is not None:
                args.eval_strategy = restore_strategy
        # Our loss is a per-batch mean: the Trainer divides it by the accumulation steps, and never passes
        # `num_items_in_batch` to the model (GCLModel.forward forwards **kwargs to the text tower).
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched > 1 and self.accelerator.num_processes != launched:
            raise RuntimeError(
                f"{launched} processes were launched (WORLD_SIZE={launched}) but each trains alone: on a machine "
                "without GPUs pass --use_cpu (or set ACCELERATE_USE_CPU=1) so that they form one gloo group"
            )
        self._check_gradient_cache_support()
        self._check_batch(model)
        self._nan_guard.skip_gradients = getattr(self.accelerator, "scaler", None) is not None
        self.add_callback(self._nan_guard)

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _as_gcl_model(model: Any, args: GCLTrainingArguments) -> GCLModel:
        if isinstance(model, GCLModel):
            return model
        return GCLModel.from_backbone(model, **args.model_overrides())

    @staticmethod
    def _configure_model(model: GCLModel, args: GCLTrainingArguments, peft_config: Any) -> None:
        config = model.config
        if args.fusion is not None and args.fusion != config.fusion:
            raise ValueError(
                f"args.fusion={args.fusion!r} but the model was built with fusion={config.fusion!r}; "
                f"build it with GCLModel.from_backbone(..., fusion={args.fusion!r})"
            )
        updates = args.gcl_config_updates(config.pair_tuples)
        if updates:
            config.update_loss_settings(**updates)
        if config.objective == "sigmoid" and model.logit_bias_param is None:
            raise ValueError(
                "objective='sigmoid' needs a logit bias: use a SigLIP backbone or build the model with "
                "GCLModel.from_backbone(..., objective='sigmoid')"
            )
        if updates:
            logger.info("GCL loss settings from the training arguments: %s", updates)

        lora = peft_config if peft_config is not None else args.lora_config(model)
        if lora is not None:
            model.apply_lora(lora, train_logit_scale=args.train_logit_scale)
        else:
            model.log_logit_scale_param.requires_grad_(args.train_logit_scale)
            if model.logit_bias_param is not None:
                model.logit_bias_param.requires_grad_(args.train_logit_scale)
        freeze_towers(model, vision=args.freeze_vision, text=args.freeze_text)
        if model.fusion_head is not None and not any("fused" in pair for pair in config.pair_tuples):
            # no pair uses fused embeddings: the head would get no gradient (and DDP would wait for one)
            model.fusion_head.requires_grad_(False)
            logger.info("no loss pair uses fused embeddings: the 'mlp' fusion head is frozen")
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError("no trainable parameters left (check freeze_vision / freeze_text / train_logit_scale)")

    @staticmethod
    def _default_collator(model: GCLModel, processor: Any, args: GCLTrainingArguments) -> Any:
        from gcl_hf.data.collator import GCLCollator

        # for_model: captions truncated to what the text tower accepts; SigLIP's fixed-length padding
        return GCLCollator.for_model(model, processor, image_column=args.image_column,
                                     text_column=args.caption_column, errors=args.image_errors)

    def _check_batch(self, model: GCLModel) -> None:
        """The contrastive batch rule (:mod:`gcl_hf.training.batch`): no batch without negatives, a warning for a
        small one, and a last batch of one dropped."""
        pairs = model.config.pair_tuples
        negatives = resolve_negatives(pairs, model.config.objective, model.config.negatives)
        per_device, processes = self.args.per_device_train_batch_size, self.accelerator.num_processes
        if self.train_dataset is None:
            return
        check_contrastive_batch(pairs, negatives, per_device, processes)
        rows = len(self.train_dataset) if hasattr(self.train_dataset, "__len__") else None
        if rows is not None and not self.args.dataloader_drop_last and drop_last_batch_without_negatives(
                pairs, negatives, rows, per_device, processes):
            logger.warning("%d rows in batches of %d leave a last batch of %d pair(s) without negatives (it would "
                           "train on a loss of 0): it is dropped each epoch", rows, per_device, rows % per_device)
            self.args.dataloader_drop_last = True

    def _check_gradient_cache_support(self) -> None:
        if not self.args.gradient_cache_chunk_size:
            return
        from accelerate.utils import DistributedType

        unsupported = {DistributedType.DEEPSPEED: "DeepSpeed", DistributedType.FSDP: "FSDP",
                       DistributedType.XLA: "XLA", DistributedType.MEGATRON_LM: "Megatron-LM"}
        kind = unsupported.get(self.accelerator.distributed_type)
        if kind is not None:
            raise ValueError(f"gradient_cache_chunk_size works with single-device and DDP training, not {kind}")
        if self.args.n_gpu > 1:
            raise ValueError("gradient_cache_chunk_size does not support DataParallel (n_gpu > 1); launch one "
                             "process per GPU with torchrun or accelerate launch")

    # ------------------------------------------------------------------ loss
    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """The GCL loss of the batch; records per-pair losses and applies the NaN guard in training."""
        mode = "train" if model.training else "eval"
        self._skipped[mode] += int(inputs.pop(SKIPPED_KEY, 0) or 0)
        self._nan_guard.take_record_ids(inputs, train=mode == "train")
        outputs = model(**inputs, return_loss=True)
        loss = outputs.loss
        if mode == "train":
            self._guard(loss, outputs.pair_losses or {})
        self._record(mode, outputs.pair_losses or {})
        return (loss, outputs) if return_outputs else loss

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        """Trainer's step, or with ``gradient_cache_chunk_size`` the gradient-cache step (same gradient)."""
        chunk = self.args.gradient_cache_chunk_size
        if not chunk:
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        self._skipped["train"] += int(inputs.pop(SKIPPED_KEY, 0) or 0)
        self._nan_guard.take_record_ids(inputs, train=True)
        # Inside Trainer's own no_sync (accumulation micro-batches) DDP already skips the all-reduce.
        no_sync = model.no_sync if getattr(model, "require_backward_grad_sync", False) else None
        steps = self.current_gradient_accumulation_steps
        with self.compute_loss_context_manager():
            out = cached_gradient_step(
                model,
                inputs,
                chunk,
                gcl_model=self.model,
                loss_scale=1.0 / steps,
                backward=self.accelerator.backward,
                no_sync=no_sync,
                check_loss=self._guard,
            )
        self._record("train", out.pair_losses)
        return out.loss / steps

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """The GCL loss of an evaluation batch (there are no labels: the pairing is the target)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # ------------------------------------------------------------------ NaN guard
    def _guard(self, loss: torch.Tensor, pair_losses: dict[str, torch.Tensor]) -> None:
        self._nan_guard.check_loss(loss, pair_losses, self.state)

    # Trainer computes the gradient norm with `clip_grad_norm_`, which would spread one NaN to every parameter:
    # the gradient guard runs first (see `NonFiniteGuard`).
    def _clip_grad_norm(self, model: nn.Module) -> Any:
        self._nan_guard.check_gradients(self.model, self.state, self.args.device)
        return super()._clip_grad_norm(model)

    def _get_grad_norm(self, model: nn.Module, grad_norm: Any = None) -> Any:
        self._nan_guard.check_gradients(self.model, self.state, self.args.device)
        return super()._get_grad_norm(model, grad_norm=grad_norm)

    # ------------------------------------------------------------------ per-pair logging
    def _record(self, mode: str, pair_losses: dict[str, torch.Tensor]) -> None:
        if not pair_losses:
            return
        sums = self._pair_sums[mode]
        for name, value in pair_losses.items():
            value = value.detach().float().reshape(())
            sums[name] = sums[name] + value if name in sums else value.clone()
        self._pair_counts[mode] += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the running mean of each pair's loss (``loss/<pair>``; ``eval_loss/<pair>`` in evaluation) and,
        in training logs, the number of records skipped so far (``skipped_records``, all processes)."""
        mode = "eval" if (self._in_evaluate or not self.model.training) else "train"
        sums, count = self._pair_sums[mode], self._pair_counts[mode]
        names = list(sums) if count else []
        values = [sums[n] / count for n in names]
        count_skips = mode == "train" and "loss" in logs
        if count_skips:
            values.append(torch.tensor(float(self._skipped["train"]), device=self.args.device))
        if values:
            packed = torch.stack([v.float().to(self.args.device) for v in values])
            # every process logs at the same steps: one symmetric collective (a sum; the losses are then averaged)
            packed = self.accelerator.reduce(packed, reduction="sum").tolist()
            prefix = "eval_loss/" if mode == "eval" else "loss/"
            logs.update({f"{prefix}{n}": v / self.accelerator.num_processes for n, v in zip(names, packed)})
            if count_skips and packed[-1] > 0:
                logs["skipped_records"] = int(packed[-1])
            self._pair_sums[mode], self._pair_counts[mode] = {}, 0
        super().log(logs, start_time)

    # ------------------------------------------------------------------ teardown
    def end_training(self) -> None:
        """Free this trainer's DDP wrapper, then tear down the process group (accelerate's
        `Accelerator.end_training`); the trainer cannot train afterwards.

        Call it once, last, in a ``torchrun`` / ``accelerate launch`` script. The order matters: DDP's reducer holds
        the gloo group, and a reducer freed after ``destroy_process_group`` destroys the group with the GIL held,
        which can deadlock the process at exit (the group's worker thread waits for the GIL to free a tensor); a
        group left alive can abort the process at interpreter shutdown instead.
        """
        self.accelerator.free_memory()
        self.model_wrapped = self.model
        gc.collect()  # the trainer's reference cycles keep the DDP module (and its reducer) alive otherwise
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            self.accelerator.end_training()

    # ------------------------------------------------------------------ saving
    def save_adapter(self, output_dir: str | os.PathLike | None = None) -> str:
        """Save the LoRA adapter plus the other trained weights and the GCL settings (`gcl_hf.hub.adapter.save_adapter`)
        to ``output_dir`` (default ``args.output_dir/adapter``), on the main process. Returns the directory."""
        directory = os.fspath(output_dir) if output_dir is not None else os.path.join(self.args.output_dir, "adapter")
        if self.args.should_save:
            save_adapter(self.model, directory)
            if self.processing_class is not None:
                self.processing_class.save_pretrained(directory)
        self.accelerator.wait_for_everyone()
        return directory

