"""How a fused (image + text) item is embedded from its two tower outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FusionMLP(nn.Module):
    """A residual head over the raw image and text projections.

    ``fused = image + text + W2 · gelu(W1 · [image; text])`` with ``W2 = 0`` at initialisation, so a fresh
    head is exactly UniIR's score fusion (``"sum"``) and training only adds what the loss asks for.
    """

    def __init__(self, dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or dim
        self.fc1 = nn.Linear(2 * dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.fc1.weight, std=(2 * self.fc1.in_features) ** -0.5)
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return image + text + self.fc2(F.gelu(self.fc1(torch.cat([image, text], dim=-1))))


def fuse(
    fusion: str, image: torch.Tensor, text: torch.Tensor, head: FusionMLP | None = None
) -> torch.Tensor:
    """Fuse raw (un-normalised) image and text projections into one L2-normalised embedding."""
    if image.shape != text.shape:
        raise ValueError(
            f"fusion needs one image per text: got image features {tuple(image.shape)} "
            f"and text features {tuple(text.shape)}"
        )
    if fusion == "sum":
        fused = image + text
    elif fusion == "mean":
        fused = (F.normalize(image, dim=-1) + F.normalize(text, dim=-1)) / 2
    elif fusion == "mlp":
        if head is None:
            raise ValueError("fusion='mlp' needs the model's fusion head")
        fused = head(image, text)
    else:
        raise ValueError(f"unknown fusion {fusion!r}: expected 'sum', 'mean' or 'mlp'")
    return F.normalize(fused, dim=-1)
