"""Means and spreads over seeds, and the demo's pre-registered decision rule.

Per arm and per row (nine cells, then summary rows computed per seed before averaging) the value is
``mean ± spread`` with spread = the sample standard deviation over seeds (n − 1; 0 for one seed).
An arm X against the baseline on a row: **win** if ``mean(X) − mean(base) > max(spread(X), spread(base))``,
**loss** if it is below the negative of that, else **tie** (``n/a`` with a single seed). The verdict on
the paper's claim: *supported* iff GCL wins on the fused-cells row and on fused→fused and does not lose on
image↔text (Recall@1, mixed pool).
"""

from __future__ import annotations

import math
from typing import Any

from gcl_hf.demo.evaluation import CELLS

__all__ = ["FUSED_CELLS", "ROWS", "SUMMARY_ROWS", "claim_verdict", "compare", "mean_sd", "summarize"]

_ALL = tuple(f"{q}->{c}" for q, c in CELLS)
#: The five cells with a fused query or a fused candidate.
FUSED_CELLS: tuple[str, ...] = tuple(c for c in _ALL if "fused" in c)
#: Summary rows: label -> the cells averaged (per seed).
SUMMARY_ROWS: dict[str, tuple[str, ...]] = {
    "fused cells": FUSED_CELLS,
    "image↔text": ("image->text", "text->image"),
    "all 9 cells": _ALL,
}
#: Every row of the tables, in order.
ROWS: tuple[str, ...] = _ALL + tuple(SUMMARY_ROWS)


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1; 0.0 for a single value)."""
    if not values:
        raise ValueError("mean_sd of no values")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _row_values(cells: dict[str, dict[str, float]], metric: str) -> dict[str, float]:
    """One seed's rows in percent: the nine cells, then each summary row's mean of cells."""
    values = {cell: 100.0 * cells[cell][metric] for cell in _ALL}
    for row, members in SUMMARY_ROWS.items():
        values[row] = sum(values[c] for c in members) / len(members)
    return values


def summarize(results: dict[str, Any], pool: str = "mixed", metric: str = "recall@1") -> dict[str, dict[str, dict]]:
    """``{model: {row: {"mean", "sd", "values"}}}`` in percent over the seeds of ``results`` (the content
    of ``results.json``); ``pool`` is ``"mixed"`` (key ``cells``) or ``"local"`` (key ``local_pool``)."""
    key = {"mixed": "cells", "local": "local_pool"}[pool]
    seeds = list(results["seeds"])
    out: dict[str, dict[str, dict]] = {}
    for model in results["models"]:
        per_seed = [_row_values(results["seeds"][s]["models"][model][key], metric) for s in seeds]
        out[model] = {}
        for row in ROWS:
            values = [p[row] for p in per_seed]
            mean, sd = mean_sd(values)
            out[model][row] = {"mean": mean, "sd": sd, "values": values}
    return out


def compare(summary: dict[str, dict[str, dict]], arm: str, baseline: str) -> dict[str, dict[str, Any]]:
    """``{row: {"diff", "threshold", "verdict", "paired"}}``: the decision rule for ``arm`` vs ``baseline``
    (``paired``: the per-seed differences, for the record)."""
    out = {}
    for row in ROWS:
        a, b = summary[arm][row], summary[baseline][row]
        diff = a["mean"] - b["mean"]
        threshold = max(a["sd"], b["sd"])
        if len(a["values"]) < 2:
            verdict = "n/a"
        elif diff > threshold:
            verdict = "win"
        elif diff < -threshold:
            verdict = "loss"
        else:
            verdict = "tie"
        out[row] = {"diff": diff, "threshold": threshold, "verdict": verdict,
                    "paired": [x - y for x, y in zip(a["values"], b["values"])]}
    return out


def claim_verdict(comparison: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The verdict on the paper's claim from :func:`compare` (GCL vs CL, Recall@1, mixed pool)."""
    cells = [f"{q}->{c}" for q, c in CELLS]
    counts = {v: sum(comparison[c]["verdict"] == v for c in cells) for v in ("win", "tie", "loss", "n/a")}
    if counts["n/a"]:
        return {"verdict": "n/a", "reasons": ["a single seed: no spread, no decision"], "cell_counts": counts}
    failed = []
    if comparison["fused cells"]["verdict"] != "win":
        failed.append(f"fused cells: {comparison['fused cells']['verdict']}")
    if comparison["fused->fused"]["verdict"] != "win":
        failed.append(f"fused->fused: {comparison['fused->fused']['verdict']}")
    if comparison["image↔text"]["verdict"] == "loss":
        failed.append("image↔text: loss")
    return {"verdict": "not supported" if failed else "supported", "reasons": failed, "cell_counts": counts}
