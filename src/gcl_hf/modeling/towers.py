"""Freezing a backbone's vision or text tower (with its projection and any LoRA adapters in it)."""

from __future__ import annotations

from torch import nn

__all__ = ["freeze_towers"]


_VISION_PREFIXES = ("vision", "visual")
_TEXT_PREFIXES = ("text",)


def _tower_modules(backbone: nn.Module, prefixes: tuple[str, ...]) -> list[tuple[str, nn.Module]]:
    return [(name, child) for name, child in backbone.named_children() if name.startswith(prefixes)]


def freeze_towers(model: nn.Module, *, vision: bool = False, text: bool = False) -> list[str]:
    """Freeze the vision and/or text tower of the backbone (with their projections and any LoRA adapters in
    them). Returns the names of the frozen sub-modules; raises if a requested tower is not found."""
    backbone = model._unwrapped_backbone()
    frozen: list[str] = []
    for wanted, prefixes, label in ((vision, _VISION_PREFIXES, "vision"), (text, _TEXT_PREFIXES, "text")):
        if not wanted:
            continue
        modules = _tower_modules(backbone, prefixes)
        if not modules:
            children = [n for n, _ in backbone.named_children()]
            raise ValueError(
                f"freeze_{label}: {type(backbone).__name__} has no sub-module named {'/'.join(prefixes)}* "
                f"(its children: {children})"
            )
        for name, module in modules:
            module.requires_grad_(False)
            frozen.append(name)
    return frozen
