"""Helpers shared by the `gcl-hf` sub-commands: ``KEY=JSON`` options and finding a model's processor."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["load_processor", "parse_options"]


def parse_options(items: list[str], prog: str) -> dict[str, Any]:
    """``["pool=\\"global\\"", "instructions=true"]`` → ``{"pool": "global", "instructions": True}``.

    A value that is not JSON is kept as a string; an item without ``=`` exits with a message naming it.
    """
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{prog}: --option {item!r}: expected KEY=JSON")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options


def load_processor(model_name: str, model: Any, *, processor: str | None = None, revision: str | None = None,
                   prog: str = "gcl-hf") -> Any:
    """The processor given, else the model's own, else its base model's (named in the backbone config)."""
    from transformers import AutoProcessor

    candidates = [processor] if processor else [model_name]
    base = getattr(getattr(model.config, "backbone_config", None), "_name_or_path", None)
    if base and not processor:
        candidates.append(base)
    errors = []
    for name in candidates:
        try:
            return AutoProcessor.from_pretrained(name, revision=revision if name == model_name else None)
        except Exception as exc:  # noqa: BLE001 - report every candidate tried
            errors.append(f"{name}: {exc}")
    raise SystemExit(f"{prog}: no processor found; pass --processor. Tried:\n  " + "\n  ".join(errors))
