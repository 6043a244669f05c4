"""The demo's report: the 3×3 Recall@k table (rich) and the figure (matplotlib).

Both read the ``results.json`` content written by :func:`gcl_hf.demo.pipeline.run_demo`, so a saved run
can be re-rendered (``render_table(json.load(...))``) without re-training.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table

    from gcl_hf.demo.pipeline import DemoResult

__all__ = ["CELL_GROUPS", "gap_projection", "plot_demo", "print_report", "render_table", "summary_rows", "table_text"]

_ARROW = "→"
#: Summary rows of the table: label -> the cells averaged.
CELL_GROUPS: dict[str, tuple[str, ...]] = {
    "mean, 9 cells": tuple(f"{q}->{c}" for q in ("image", "text", "fused") for c in ("image", "text", "fused")),
    "mean i↔t": ("image->text", "text->image"),
    "mean w/ fused": ("image->fused", "text->fused", "fused->image", "fused->text", "fused->fused"),
}


def _short(label: str) -> str:
    return label.split()[0]


def _models(results: dict[str, Any]) -> list[str]:
    return list(results["models"])


def _cell(results: dict[str, Any], model: str, cell: str, k: int) -> float:
    return 100.0 * results["models"][model]["cells"][cell][f"recall@{k}"]


def _mean(results: dict[str, Any], model: str, cells: tuple[str, ...], k: int) -> float:
    return sum(_cell(results, model, c, k) for c in cells) / len(cells)


def _delta(value: float, digits: int = 1, unit: float = 0.05, width: int = 5, lower_is_better: bool = False) -> str:
    value = round(value, digits) + 0.0  # no "-0.0"
    text = f"{value:+{width}.{digits}f}"
    good = -value if lower_is_better else value
    if good > unit:
        return f"[green]{text}[/green]"
    if good < -unit:
        return f"[red]{text}[/red]"
    return text


def summary_rows(results: dict[str, Any]) -> dict[str, dict[str, tuple[float, float]]]:
    """``{group: {model: (mean R@1 %, mean R@5 %)}}`` for the :data:`CELL_GROUPS`."""
    return {
        group: {m: (_mean(results, m, cells, 1), _mean(results, m, cells, 5)) for m in _models(results)}
        for group, cells in CELL_GROUPS.items()
    }


def render_table(results: dict[str, Any]) -> "Table":
    """A rich table: one row per query→candidate cell (R@1 and R@5 in %, mixed pool) for the pre-trained
    model and every fine-tuning arm, the change against the baseline arm (CLIP loss) for the others, means
    over groups of cells, and the modality gap (image–text centroid distance, matched-pair cosine)."""
    from rich import box
    from rich.table import Table

    models = _models(results)
    baseline = results["baseline"]
    config = results["config"]
    compared = [m for m in models if m not in (baseline, "pretrained")]
    title = (f"Recall@1 / Recall@5 (%) in one mixed pool of {3 * config['num_test']} items "
             f"(images, texts, fused); {config['num_test']} queries per row")
    caption = (f"{config['num_train']} train pairs; {config['pretrain_steps']} pre-training steps (CLIP loss), then "
               f"{config['steps']} fine-tuning steps per arm, batch {config['batch_size']}, seed {config['seed']}.\n"
               f"Δ: change against {results['models'][baseline]['label']}. "
               + " ".join(results["models"][m].get("note", "") for m in compared).strip())
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, title_justify="left", caption_justify="left",
                  pad_edge=False, padding=(0, 1))
    table.add_column(f"query {_ARROW} cand.", no_wrap=True)
    for m in models:
        table.add_column(f"{results['models'][m]['label']}\nR@1   R@5", justify="right")
        if m in compared:
            table.add_column(f"Δ vs {_short(results['models'][baseline]['label'])}\nR@1   R@5", justify="right")

    def row(label: str, values: dict[str, tuple[float, float]], end_section: bool = False) -> None:
        cells = [label]
        for m in models:
            r1, r5 = values[m]
            cells.append(f"{r1:5.1f} {r5:5.1f}")
            if m in compared:
                b1, b5 = values[baseline]
                cells.append(f"{_delta(r1 - b1)} {_delta(r5 - b5)}")
        table.add_row(*cells, end_section=end_section)

    names = results["cells"]
    for i, cell in enumerate(names):
        q, c = cell.split("->")
        values = {m: (_cell(results, m, cell, 1), _cell(results, m, cell, 5)) for m in models}
        row(f"{q} {_ARROW} {c}", values, end_section=i == len(names) - 1)
    groups = summary_rows(results)
    for n, (group, values) in enumerate(groups.items()):
        row(group, values, end_section=n == len(groups) - 1)
    for label, key, lower in (("gap ‖μi−μt‖", "centroid_distance", True), ("cos(i, t)", "matched_cosine", False)):
        cells = [label]
        for m in models:
            value = results["models"][m]["modality_gap"][key]["image-text"]
            cells.append(f"{value:.3f}")
            if m in compared:
                base = results["models"][baseline]["modality_gap"][key]["image-text"]
                cells.append(_delta(value - base, digits=3, unit=0.0005, width=0, lower_is_better=lower))
        table.add_row(*cells)
    return table


def print_report(results: dict[str, Any], console: Any = None) -> None:
    """Print :func:`render_table` to ``console`` (default: a new rich console on stdout)."""
    from rich.console import Console

    (console or Console()).print(render_table(results))


def table_text(results: dict[str, Any], width: int = 130) -> str:
    """The table as plain text (no colours), e.g. for a README."""
    from rich.console import Console

    console = Console(width=width, record=True, color_system=None, file=open(os.devnull, "w"))
    console.print(render_table(results))
    text = console.export_text(styles=False)
    console.file.close()
    return "\n".join(line.rstrip() for line in text.splitlines())


# ---------------------------------------------------------------------------------------------- plot

_COLOURS = {"image": "#1f77b4", "text": "#d62728", "fused": "#2ca02c"}
_MODEL_COLOURS = ("0.6", "#ff7f0e", "#9467bd", "#17becf", "#8c564b", "#e377c2")


def gap_projection(embeds: dict[str, Any]) -> dict[str, "np.ndarray"]:
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
    stacked = np.concatenate(list(rest.values()))
    _, _, vt = np.linalg.svd(stacked, full_matrices=False)
    axis = vt[0] * (1.0 if vt[0][np.argmax(np.abs(vt[0]))] >= 0 else -1.0)
    return {k: np.stack([x[k], rest[k] @ axis], axis=1) for k in arrays}


def plot_demo(result: "DemoResult", path: str | os.PathLike) -> str | None:
    """Save the demo figure as a PNG: top, the test pool's embeddings by modality (:func:`gap_projection`,
    centroids as X) for each model; bottom, the baseline's R@1 per cell and every other arm's R@1 change against it (3×3
    heatmaps, rows = query modality, columns = candidate modality). Returns the path, or ``None`` (with a
    warning) when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the install
        import warnings

        warnings.warn("matplotlib is not installed (pip install 'gcl-hf[plot]'): no demo.png", stacklevel=2)
        return None
    import numpy as np

    results = result.results
    models = _models(results)
    baseline = results["baseline"]
    arms = [m for m in models if m != "pretrained"]
    columns = max(len(models), len(arms))
    fig = Figure(figsize=(3.6 * columns, 7.4), dpi=110)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, columns, height_ratios=[1.0, 0.95], hspace=0.42, wspace=0.32)

    coords = {m: gap_projection({name: result.embeddings[m].candidates[name] for name in ("image", "text", "fused")})
              for m in models}
    stacked = np.concatenate([xy for per_model in coords.values() for xy in per_model.values()])
    pad = 0.05 * (stacked.max(axis=0) - stacked.min(axis=0))
    lo, hi = stacked.min(axis=0) - pad, stacked.max(axis=0) + pad
    for j, m in enumerate(models):
        ax = fig.add_subplot(grid[0, j])
        for name, xy in coords[m].items():
            ax.scatter(xy[:, 0], xy[:, 1], s=3, alpha=0.3, color=_COLOURS[name], label=name, rasterized=True)
        for name, xy in coords[m].items():
            c = xy.mean(axis=0)
            ax.scatter([c[0]], [c[1]], s=110, marker="X", color=_COLOURS[name], edgecolors="black", linewidths=0.8)
        gap = results["models"][m]["modality_gap"]["centroid_distance"]["image-text"]
        ax.set_title(f"{results['models'][m]['label']}\nimage–text gap {gap:.3f}", fontsize=10)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.tick_params(labelsize=7)
        ax.set_xlabel("text ← centroid direction → image", fontsize=8)
        if j == 0:
            ax.legend(loc="upper left", fontsize=8, markerscale=3, framealpha=0.8)
            ax.set_ylabel("top other principal axis", fontsize=8)

    labels = ["image", "text", "fused"]
    grid_of = lambda m: np.array([[_cell(results, m, f"{q}->{c}", 1) for c in labels] for q in labels])  # noqa: E731
    base = grid_of(baseline)
    deltas = {m: grid_of(m) - base for m in arms if m != baseline}
    limit = max([1.0] + [float(np.abs(d).max()) for d in deltas.values()])
    panels = [(baseline, base, f"{results['models'][baseline]['label']}: R@1 (%)", "viridis", 0.0, 100.0)]
    panels += [(m, d, f"{results['models'][m]['label']}: ΔR@1 vs\n{results['models'][baseline]['label']} (points)",
                "RdBu", -limit, limit) for m, d in deltas.items()]
    for j, (m, values, title, cmap, lo, hi) in enumerate(panels):
        ax = fig.add_subplot(grid[1, j])
        image = ax.imshow(values, cmap=cmap, vmin=lo, vmax=hi)
        for (r, c), v in np.ndenumerate(values):
            text = f"{v:.0f}" if m == baseline else f"{v:+.1f}"
            shade = image.cmap(image.norm(v))
            dark = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] < 0.5
            ax.text(c, r, text, ha="center", va="center", fontsize=10, color="white" if dark else "black")
        ax.set_xticks(range(3), labels, fontsize=9)
        ax.set_yticks(range(3), labels, fontsize=9)
        ax.set_xlabel("candidate", fontsize=9)
        if j == 0:
            ax.set_ylabel("query", fontsize=9)
        ax.set_title(title, fontsize=10)
    if len(panels) < columns:  # a spare slot: mean R@1 per group of cells, every model
        ax = fig.add_subplot(grid[1, len(panels)])
        groups = summary_rows(results)
        width = 0.8 / len(models)
        for n, m in enumerate(models):
            values = [groups[g][m][0] for g in groups]
            ax.bar(np.arange(len(groups)) + (n - (len(models) - 1) / 2) * width, values, width,
                   label=results["models"][m]["label"], color=_MODEL_COLOURS[n % len(_MODEL_COLOURS)])
        ax.set_xticks(range(len(groups)), [g.replace("mean", "").strip(" ,") for g in groups], fontsize=8)
        lo = min(groups[g][m][0] for g in groups for m in models)
        ax.set_ylim(max(0.0, lo - 10.0), None)
        ax.set_title("mean R@1 (%)", fontsize=10)
        ax.legend(fontsize=7, loc="lower right", framealpha=0.8)
    fig.suptitle("gcl-hf demo: CLIP loss vs GCL fine-tuning, same pre-trained start, same steps", fontsize=12)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path
