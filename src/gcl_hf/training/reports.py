"""What `GCLTrainer` reports beyond the loss: retrieval metrics on `RetrievalTask` s during ``evaluate()``, the
GCL model card (``create_model_card`` / ``push_to_hub``) carrying the settings and those metrics, and the mean
training loss of a whole run that was resumed (`whole_run_loss`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class RetrievalReportsMixin:
    """`GCLTrainer`'s ``evaluate`` / ``evaluate_retrieval`` / ``create_model_card`` (uses ``eval_tasks``,
    ``_in_evaluate`` and ``_last_retrieval``, set by the trainer's ``__init__``)."""

    # ------------------------------------------------------------------ evaluation
    def evaluate(
        self,
        eval_dataset: Any = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """The GCL loss on ``eval_dataset`` (if any) and the retrieval metrics of ``eval_tasks`` (if any)."""
        if eval_dataset is None and self.eval_dataset is None and not self.eval_tasks:
            raise ValueError("evaluate() needs an eval_dataset or eval_tasks")
        metrics: dict[str, float] = {}
        self._in_evaluate = True
        try:
            if eval_dataset is not None or self.eval_dataset is not None:
                metrics.update(super().evaluate(eval_dataset, ignore_keys, metric_key_prefix))
            if self.eval_tasks:
                retrieval = self.evaluate_retrieval(metric_key_prefix=metric_key_prefix)
                self.log(dict(retrieval))
                self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, retrieval)
                metrics.update(retrieval)
        finally:
            self._in_evaluate = False
        return metrics

    def evaluate_retrieval(
        self, tasks: Sequence[Any] | None = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """Score each `RetrievalTask` with `gcl_hf.retrieval.evaluation.evaluate_retrieval` (``k``: ``args.retrieval_k`` or
        the task's own); keys ``<prefix>_<task.name>_<metric>``, e.g. ``eval_mscoco_task0_recall@5``.
        Under DDP each process encodes a shard of the queries and of the corpus and receives the others' rows
        (`gcl_hf.retrieval.distributed_encoding.encode_dataset_sharded`); every process then ranks the same
        embeddings, so all report the same numbers and agree on the best model."""
        from gcl_hf.retrieval.evaluation import evaluate_retrieval
        from gcl_hf.retrieval.options import EncodeOptions

        if self.processing_class is None:
            raise ValueError("retrieval evaluation needs processing_class (the backbone's processor)")
        tasks = self.eval_tasks if tasks is None else list(tasks)
        options = EncodeOptions(batch_size=self.args.per_device_eval_batch_size,
                                num_workers=self.args.dataloader_num_workers,
                                show_progress=not self.args.disable_tqdm and self.is_local_process_zero(),
                                distributed=self.accelerator.num_processes > 1)
        model = self.model
        was_training = model.training
        model.eval()
        results: dict[str, float] = {}
        try:
            for task in tasks:
                k = self.args.retrieval_ks or tuple(getattr(task, "k", (1, 5, 10)))
                scores = evaluate_retrieval(model, self.processing_class, task, k=k, options=options)
                name = str(task.name).replace(" ", "_")
                results.update({f"{metric_key_prefix}_{name}_{key}": float(value) for key, value in scores.items()
                                if isinstance(value, (int, float))})
                self._last_retrieval[str(task.name)] = {k: float(v) for k, v in scores.items()
                                                        if isinstance(v, (int, float))}
        finally:
            model.train(was_training)
        return results

    # ------------------------------------------------------------------ model card
    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """Write the GCL model card (base model, data, loss and LoRA settings, how to load, retrieval results) to
        ``args.output_dir/README.md`` instead of the generic Trainer card; ``push_to_hub`` uploads it."""
        if not self.is_world_process_zero():
            return
        from gcl_hf.hub.card import render_training_card

        datasets = dataset_tags or dataset
        card_kwargs: dict[str, Any] = {"license": license, "language": language}
        if tags:
            card_kwargs["tags"] = [tags] if isinstance(tags, str) else list(tags)
        if finetuned_from:
            card_kwargs["base_model"] = finetuned_from
        render_training_card(self.model, self.args, output_dir=self.args.output_dir, processor=self.processing_class,
                             eval_results=self._last_retrieval or None,
                             datasets=[datasets] if isinstance(datasets, str) else datasets, **card_kwargs)


def whole_run_loss(log_history: Sequence[dict[str, Any]], resumed_loss: float, start_step: int,
                   final_step: int) -> float:
    """The mean training loss over every step of a run resumed at ``start_step``: `Trainer`'s ``train_loss``
    (``resumed_loss``) covers only the steps after the resume, so the logged losses before it (each ``loss``
    entry of ``log_history`` is the mean over the steps since the previous one) are weighted back in."""
    total, steps, previous = 0.0, 0, 0
    for entry in sorted((e for e in log_history if "loss" in e and "step" in e), key=lambda e: e["step"]):
        if entry["step"] > start_step:
            break
        total += float(entry["loss"]) * (entry["step"] - previous)
        steps += entry["step"] - previous
        previous = entry["step"]
    resumed = max(final_step - start_step, 0)
    total, steps = total + resumed_loss * resumed, steps + resumed
    return total / steps if steps else resumed_loss


__all__ = ["RetrievalReportsMixin", "whole_run_loss"]
