"""Saving and publishing a `GCLModel`: ``save_pretrained`` writes, beside the weights, what using the model needs
(its processor, the sentence-transformers files); ``push_to_hub`` publishes one of three forms with a GCL card."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, ClassVar, Literal

__all__ = ["PublishingMixin"]


class PublishingMixin:
    """Adds GCL's ``save_pretrained`` extras and ``push_to_hub`` to `GCLModel`."""

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """``PreTrainedModel.save_pretrained`` plus, beside the weights, the attached processor (so `encode` finds
        it) and the sentence-transformers files (so ``SentenceTransformer(directory)`` loads the model)."""
        super().save_pretrained(save_directory, *args, **kwargs)  # type: ignore[misc]
        self._save_usage_files(save_directory, form="full", **kwargs)

    def _save_usage_files(self, save_directory: str | os.PathLike, *, form: str, **kwargs: Any) -> None:
        if not kwargs.get("is_main_process", True):
            return
        from gcl_hf.modeling.st_format import write_sentence_transformers_files

        if self.processor is not None:
            self.processor.save_pretrained(save_directory)
        write_sentence_transformers_files(self, save_directory, form=form)

    # ------------------------------------------------------------------ Hub
    #: What `push_to_hub` calls: `gcl_hf.hub.publish.publish`, wired by ``import gcl_hf`` at the package root so
    #: that modeling never imports hub (hub builds on modeling, not the reverse).
    publisher: ClassVar[Callable[..., Any] | None] = None

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str | None = "50GB",
        tags: list[str] | None = None,
        form: Literal["full", "adapter", "backbone"] = "full",
        processor: Any | None = None,
        eval_results: Any | None = None,
        training_info: Any | None = None,
        **card_kwargs: Any,
    ) -> Any:
        """transformers' ``push_to_hub`` plus GCL's keywords: one commit with a GCL model card. ``form`` is
        ``"full"``, ``"adapter"`` (LoRA only) or ``"backbone"`` (the merged plain checkpoint); see
        :func:`gcl_hf.hub.publish`."""
        if type(self).publisher is None:  # pragma: no cover - import gcl_hf always wires it
            raise RuntimeError("GCLModel.push_to_hub needs `import gcl_hf` (which wires gcl_hf.hub.publish)")
        return type(self).publisher(
            self, repo_id, form=form, processor=processor, eval_results=eval_results, training_info=training_info,
            commit_message=commit_message, commit_description=commit_description, private=private, token=token,
            revision=revision, create_pr=create_pr, max_shard_size=max_shard_size or "50GB", tags=tags,
            **card_kwargs,
        )

