"""The three forms a GCL model is published in (a module of its own: the command line reads it without loading
huggingface_hub or torch)."""

from __future__ import annotations

from typing import Literal

#: ``"full"``: the whole `GCLModel`; ``"adapter"``: the backbone's LoRA adapter + GCL settings; ``"backbone"``:
#: the merged backbone as a plain transformers checkpoint.
Form = Literal["full", "adapter", "backbone"]
FORMS: tuple[Form, ...] = ("full", "adapter", "backbone")

__all__ = ["FORMS", "Form"]
