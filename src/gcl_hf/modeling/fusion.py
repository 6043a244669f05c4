"""How a fused (image + text) item is embedded.

A backbone may bring its own fused encoder (e.g. one that feeds image tokens into its text encoder): if its
class offers ``get_fused_features(pixel_values=..., input_ids=..., attention_mask=...)``,
`GCLModel.from_backbone` picks ``fusion="backbone"`` and asks it. Otherwise the fused embedding comes from the
two tower outputs (no third encoder pass): ``"sum"`` (UniIR's score fusion, the default), ``"mean"`` or
``"mlp"`` (a learned head that starts as ``"sum"``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: ``config.fusion`` values: score fusion of the tower outputs, or the backbone's own fused encoder.
FUSIONS = ("sum", "mean", "mlp", "backbone")
#: The method a backbone defines to embed fused items itself (raw, un-normalised features like its towers').
FUSED_ENCODER_METHOD = "get_fused_features"
#: Optional: one call returning raw ``(image, text, fused)`` features of image–text pairs, for a backbone whose
#: fused encoder can reuse its image encoding (VISTA runs its ViT once for the image and the fused embedding).
ALL_FEATURES_METHOD = "get_image_text_fused_features"


def has_fused_encoder(backbone: nn.Module) -> bool:
    """True when ``backbone`` brings its own fused encoder (``get_fused_features``)."""
    return callable(getattr(backbone, FUSED_ENCODER_METHOD, None))


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
    fusion: str, image: torch.Tensor, text: torch.Tensor, head: FusionMLP | None = None, *, normalize: bool = True
) -> torch.Tensor:
    """Fuse raw (un-normalised) image and text projections into one embedding, L2-normalised unless
    ``normalize=False`` (then the fused vector before its normalisation, e.g. ``image + text`` for ``"sum"``)."""
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
    elif fusion == "backbone":
        raise ValueError("fusion='backbone' embeds fused items with the backbone's get_fused_features, not its towers")
    else:
        raise ValueError(f"unknown fusion {fusion!r}: expected one of {FUSIONS}")
    return F.normalize(fused, dim=-1) if normalize else fused
