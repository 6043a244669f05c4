"""The demo figure (``demo.png``): where each modality sits, and Recall@1 per cell with its spread.

Top row: the first seed's candidate embeddings of every model, projected to show the modality gap
(:func:`gap_projection`), with each modality's centroid drawn on top. Middle and bottom: mean Recall@1
over seeds per cell and summary row (mixed pool, then local pools), one bar per model, error bars = the
spread over seeds; bar axes start at 0 and the legend sits above the bars.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from gcl_hf.demo.stats import SUMMARY_ROWS

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from gcl_hf.demo.results import DemoResult

__all__ = ["gap_projection", "plot_demo"]

_COLOURS = {"image": "#1f77b4", "text": "#d62728", "fused": "#2ca02c"}
_MODEL_COLOURS = ("0.65", "#ff7f0e", "#2ca02c", "#9467bd", "#17becf", "#8c564b")
#: Centroid marker areas, drawn largest first, so coinciding centroids show as nested crosses.
_CENTROID_SIZES = {"image": 420, "text": 220, "fused": 90}


def gap_projection(embeds: dict[str, Any]) -> dict[str, np.ndarray]:
    """2-D coordinates of the (normalised) ``image``/``text``/``fused`` embeddings that show the modality gap:
    x along the direction from the text centroid to the image centroid, y along the top principal axis of
    what remains. (A plain PCA mostly shows the content and hides the gap.)"""
    import numpy as np

    from gcl_hf.retrieval.analysis import pca_2d

    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in embeds.items()}
    arrays = {k: a / np.linalg.norm(a, axis=1, keepdims=True) for k, a in arrays.items()}
    mean = np.concatenate(list(arrays.values())).mean(axis=0)
    direction = arrays["image"].mean(axis=0) - arrays["text"].mean(axis=0)
    norm = float(np.linalg.norm(direction))
    if norm == 0.0:  # no gap at all: fall back to the plain PCA
        return pca_2d(arrays)
    direction /= norm
    x = {k: (a - mean) @ direction for k, a in arrays.items()}
    rest = {k: (a - mean) - np.outer(x[k], direction) for k, a in arrays.items()}
    _, _, vt = np.linalg.svd(np.concatenate(list(rest.values())), full_matrices=False)
    axis = vt[0] * (1.0 if vt[0][np.argmax(np.abs(vt[0]))] >= 0 else -1.0)
    return {k: np.stack([x[k], rest[k] @ axis], axis=1) for k in arrays}


def _scatter(fig: Any, cell: Any, result: DemoResult, model: str, limits: tuple, first: bool) -> None:
    results, coords = result.results, result.first_seed
    xy_by_modality = gap_projection({name: coords.embeddings[model].candidates[name] for name in _COLOURS})
    ax = fig.add_subplot(cell)
    for name, xy in xy_by_modality.items():
        ax.scatter(xy[:, 0], xy[:, 1], s=3, alpha=0.25, color=_COLOURS[name], label=name, zorder=1)
    for name, xy in xy_by_modality.items():  # concentric: all three stay visible when centroids coincide
        c = xy.mean(axis=0)
        ax.scatter([c[0]], [c[1]], s=_CENTROID_SIZES[name], marker="X", color=_COLOURS[name], edgecolors="black",
                   linewidths=1.2, zorder=5)
    gap = results["seeds"][str(coords.seed)]["models"][model]["modality_gap"]["centroid_distance"]["image-text"]
    ax.set_title(f"{results['models'][model]['label']} (seed {coords.seed})\nimage–text gap {gap:.3f}", fontsize=10)
    (x0, x1), (y0, y1) = limits
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("text ← centroid direction → image", fontsize=8)
    if first:
        ax.set_ylabel("top other principal axis", fontsize=8)


def _bars(fig: Any, cell: Any, results: dict[str, Any], pool: str) -> None:
    import numpy as np

    summary = results["summary"][pool]["recall@1"]
    models, rows = list(results["models"]), list(results["rows"])
    ax = fig.add_subplot(cell)
    width = 0.8 / len(models)
    x = np.arange(len(rows), dtype=float)
    x[-len(SUMMARY_ROWS):] += 0.6  # a gap before the summary rows
    for n, m in enumerate(models):
        means = [summary[m][r]["mean"] for r in rows]
        sds = [summary[m][r]["sd"] for r in rows]
        ax.bar(x + (n - (len(models) - 1) / 2) * width, means, width, yerr=sds, capsize=2,
               label=results["models"][m]["label"], color=_MODEL_COLOURS[n % len(_MODEL_COLOURS)],
               error_kw={"elinewidth": 0.8})
    ax.set_xticks(x, [r.replace("->", "→\n") for r in rows], fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("Recall@1 (%)", fontsize=9)
    ax.axvline(x[-len(SUMMARY_ROWS)] - 0.8, color="0.7", linewidth=0.8)
    ax.grid(axis="y", alpha=0.3)
    name = "one mixed pool (pictures, captions, fused)" if pool == "mixed" else "local pools (target modality only)"
    ax.set_title(f"Recall@1, {name}: mean over seeds {', '.join(results['seeds'])}, error bar = spread",
                 fontsize=10, pad=26)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(models), fontsize=8, frameon=False)


def plot_demo(result: DemoResult, path: str | os.PathLike) -> str | None:
    """Save the demo figure as a PNG and return its path, or ``None`` (with a warning) when matplotlib is
    not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the install
        import warnings

        warnings.warn("matplotlib is not installed (pip install 'gcl-hf[plot]'): no demo.png", stacklevel=2)
        return None
    import numpy as np

    results = result.results
    models = list(results["models"])
    fig = Figure(figsize=(max(12.0, 3.4 * len(models)), 12.5), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(3, len(models), height_ratios=[1.0, 0.9, 0.9], hspace=0.62, wspace=0.28)
    emb = result.first_seed.embeddings
    stacked = np.concatenate([xy for m in models for xy in gap_projection(
        {name: emb[m].candidates[name] for name in _COLOURS}).values()])
    pad = 0.06 * (stacked.max(axis=0) - stacked.min(axis=0))
    lo, hi = stacked.min(axis=0) - pad, stacked.max(axis=0) + pad
    for j, m in enumerate(models):
        _scatter(fig, grid[0, j], result, m, ((lo[0], hi[0]), (lo[1], hi[1])), first=j == 0)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linestyle="", marker="o", markersize=6, color=_COLOURS[n], alpha=0.6,
                      label=f"{n} candidates") for n in _COLOURS]
    handles += [Line2D([], [], linestyle="", marker="X", markersize=size ** 0.5 * 0.75, color=_COLOURS[n],
                       markeredgecolor="black", label=f"{n} centroid") for n, size in _CENTROID_SIZES.items()]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.955), ncol=len(handles), fontsize=8,
               frameon=False)
    _bars(fig, grid[1, :], results, "mixed")
    _bars(fig, grid[2, :], results, "local")
    fig.suptitle("gcl-hf demo: +CL vs +GCL fine-tuning from the same pre-trained start (complementary "
                 "pictures and captions)", fontsize=12)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path
