"""The modality gap: how far apart image, text and fused embeddings sit in the shared space.

CLIP-like models place each modality in its own region of the sphere (the "modality gap"), which
hurts retrieval over mixed-modality pools; GCL training is meant to shrink it. :func:`modality_gap`
measures it for row-aligned embeddings (row n of each modality comes from the same item) and
:func:`plot_modality_embeddings` draws the embeddings of each modality in a 2-D PCA projection.
"""

from __future__ import annotations

import itertools
import os
from typing import Union

import numpy as np
import torch

__all__ = ["modality_gap", "pca_2d", "plot_modality_embeddings"]

ArrayLike = Union[torch.Tensor, np.ndarray]


def _normalised(x: ArrayLike, name: str) -> np.ndarray:
    a = x.detach().to("cpu", torch.float64).numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty [N, D] array, got shape {a.shape}")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{name} row {int(np.argmin(norms[:, 0]))} is all zeros")
    return a / norms


def modality_gap(
    image_embeds: ArrayLike, text_embeds: ArrayLike, fused_embeds: ArrayLike | None = None
) -> dict[str, dict[str, float]]:
    """Centroid distances and matched-pair cosines between modalities.

    Embeddings are ``[N, D]`` (L2-normalised here) and row-aligned: row n of each comes from item n.
    Returns ``{"centroid_distance": {"image-text": ‖mean_image − mean_text‖, ...},
    "matched_cosine": {"image-text": mean_n cos(image_n, text_n), ...}}`` over each pair of the
    given modalities (``image-fused`` and ``text-fused`` too when ``fused_embeds`` is given).
    """
    embeds = {"image": _normalised(image_embeds, "image_embeds"), "text": _normalised(text_embeds, "text_embeds")}
    if fused_embeds is not None:
        embeds["fused"] = _normalised(fused_embeds, "fused_embeds")
    shapes = {name: e.shape for name, e in embeds.items()}
    if len({s for s in shapes.values()}) != 1:
        raise ValueError(f"row-aligned embeddings of equal shape expected, got {shapes}")
    centroids = {name: e.mean(axis=0) for name, e in embeds.items()}
    distance, cosine = {}, {}
    for a, b in itertools.combinations(embeds, 2):
        pair = f"{a}-{b}"
        distance[pair] = float(np.linalg.norm(centroids[a] - centroids[b]))
        cosine[pair] = float(np.mean(np.sum(embeds[a] * embeds[b], axis=1)))
    return {"centroid_distance": distance, "matched_cosine": cosine}


def pca_2d(embeds_by_modality: dict[str, ArrayLike]) -> dict[str, np.ndarray]:
    """Project the (normalised) embeddings of every modality onto the top-2 principal axes of their union.

    Axis signs are fixed (largest-magnitude loading positive) so the projection is deterministic.
    """
    if not embeds_by_modality:
        raise ValueError("embeds_by_modality is empty")
    arrays = {name: _normalised(x, f"embeds_by_modality[{name!r}]") for name, x in embeds_by_modality.items()}
    dims = {a.shape[1] for a in arrays.values()}
    if len(dims) != 1:
        raise ValueError(f"all modalities must share the embedding size, got {dims}")
    stacked = np.concatenate(list(arrays.values()), axis=0)
    mean = stacked.mean(axis=0)
    _, _, vt = np.linalg.svd(stacked - mean, full_matrices=False)
    axes = vt[:2]
    if axes.shape[0] < 2:  # a single point or 1-D data: pad with a zero axis
        axes = np.vstack([axes, np.zeros((2 - axes.shape[0], axes.shape[1]))])
    signs = np.sign(axes[np.arange(2), np.argmax(np.abs(axes), axis=1)])
    axes = axes * np.where(signs == 0, 1.0, signs)[:, None]
    return {name: (a - mean) @ axes.T for name, a in arrays.items()}


def plot_modality_embeddings(
    embeds_by_modality: dict[str, ArrayLike],
    path: str | os.PathLike,
    method: str = "pca",
    *,
    title: str | None = None,
    max_points: int | None = 5000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Save a PNG scatter plot of each modality's embeddings in 2-D (PCA) with their centroids.

    ``embeds_by_modality`` maps a label (``"image"``, ``"text"``, ``"fused"``, ...) to ``[N, D]``
    embeddings; at most ``max_points`` per modality are drawn (a seeded random subset; the
    projection uses them all). Returns the 2-D coordinates per modality. Uses matplotlib's Agg
    canvas directly (no pyplot, no change to the global backend).
    """
    if method != "pca":
        raise ValueError(f"method {method!r} is not supported; only 'pca' (no scikit-learn dependency)")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("plotting needs matplotlib: pip install 'gcl-hf[plot]'") from exc
    coords = pca_2d(embeds_by_modality)
    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(6, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for n, (name, xy) in enumerate(coords.items()):
        color = f"C{n % 10}"
        shown = xy
        if max_points is not None and len(xy) > max_points:
            shown = xy[rng.choice(len(xy), size=max_points, replace=False)]
        ax.scatter(shown[:, 0], shown[:, 1], s=6, alpha=0.5, color=color, label=f"{name} (n={len(xy)})")
        centre = xy.mean(axis=0)
        ax.scatter([centre[0]], [centre[1]], s=120, marker="X", color=color, edgecolors="black", linewidths=0.8)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title or "Embeddings by modality (PCA; X = centroid)")
    ax.legend(loc="best", fontsize=8, markerscale=2)
    fig.tight_layout()
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.savefig(path, format="png")
    return coords
