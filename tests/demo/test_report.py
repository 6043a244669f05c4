"""The demo's decision rule, tables, plot and gallery."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from PIL import Image

from gcl_hf.demo.evaluation import CELLS
from gcl_hf.demo.gallery import render_gallery
from gcl_hf.demo.report import render_table, table_text, verdict_text
from gcl_hf.demo.stats import ROWS, SUMMARY_ROWS, claim_verdict, compare, mean_sd

PM = re.compile(r"^\d+\.\d±\d+\.\d$")


def _summary(values: dict[str, dict[str, list[float]]]) -> dict:
    """A summary in the shape of `stats.summarize` from per-row value lists (other rows: constant 50)."""
    out = {}
    for model, rows in values.items():
        out[model] = {}
        for row in ROWS:
            vals = rows.get(row, [50.0, 50.0, 50.0])
            mean, sd = mean_sd(vals)
            out[model][row] = {"mean": mean, "sd": sd, "values": vals}
    return out


def test_mean_sd_and_the_decision_rule():
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0) and mean_sd([4.0]) == (4.0, 0.0)
    with pytest.raises(ValueError):
        mean_sd([])
    summary = _summary({
        "cl": {"fused cells": [40.0, 42.0, 44.0], "fused->fused": [30.0, 31.0, 32.0], "image↔text": [60, 61, 62]},
        "gcl": {"fused cells": [45.0, 46.0, 47.0], "fused->fused": [31.0, 32.0, 33.0], "image↔text": [55, 56, 57]},
    })
    result = compare(summary, "gcl", "cl")
    assert result["fused cells"]["verdict"] == "win"  # +4 > max(2, 1)
    assert result["fused->fused"]["verdict"] == "tie"  # +1 is not > max(1, 1)
    assert result["image↔text"]["verdict"] == "loss"  # -5 < -1
    assert result["fused cells"]["paired"] == [5.0, 4.0, 3.0]
    verdict = claim_verdict(result)
    assert verdict["verdict"] == "not supported"
    assert verdict["reasons"] == ["fused->fused: tie", "image↔text: loss"]
    assert sum(verdict["cell_counts"].values()) == 9
    win = _summary({"cl": {"fused cells": [40, 41, 42], "fused->fused": [30, 31, 32]},
                    "gcl": {"fused cells": [50, 51, 52], "fused->fused": [40, 41, 42]}})
    assert claim_verdict(compare(win, "gcl", "cl"))["verdict"] == "supported"
    single = {m: {r: {"mean": 1.0, "sd": 0.0, "values": [1.0]} for r in ROWS} for m in ("cl", "gcl")}
    assert claim_verdict(compare(single, "gcl", "cl"))["verdict"] == "n/a"


def test_tables_have_four_models_nine_cells_and_mean_spread(tiny_run):
    results = tiny_run.results
    for pool in ("mixed", "local"):
        table = render_table(results, pool)
        headers = [str(c.header) for c in table.columns]
        assert headers == ["query → cand.", "pre-trained", "+CL", "+GCL", "Δ vs +CL", "+GCL per-pair", "Δ vs +CL"]
        gap_rows = 2 if pool == "mixed" else 0
        assert table.row_count == 9 + len(SUMMARY_ROWS) + gap_rows
        labels = list(table.columns[0].cells)
        assert labels[:9] == [f"{q} → {c}" for q, c in CELLS] and labels[9:12] == list(SUMMARY_ROWS)
        for column in (1, 2, 3, 5):
            assert all(PM.match(v) for v in list(table.columns[column].cells)[:12]), (pool, column)
        cl = list(table.columns[2].cells)
        summary = results["summary"][pool]["recall@1"]["cl"]
        assert cl[8] == f"{summary['fused->fused']['mean']:.1f}±{summary['fused->fused']['sd']:.1f}"
        assert all(re.search(r"(win|tie|loss)", v) for v in list(table.columns[4].cells)[:12])
    text = table_text(results, "mixed", width=140)
    assert "image → fused" in text and "+GCL per-pair" in text and "mean±spread over seeds 0, 1" in text
    assert max(len(line) for line in text.splitlines()) <= 140
    assert "Recall@5" in table_text(results, "mixed", "recall@5")
    assert verdict_text(results).startswith("verdict (+GCL vs +CL, Recall@1, mixed pool")
    with pytest.raises(ValueError, match="pool"):
        render_table(results, "global")


def test_plot_is_a_png(tiny_run):
    path = tiny_run.plot_path
    assert path and path.endswith("demo.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.width > 1000 and image.height > 1000


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.hrefs: list[str] = []
        self.cands: list[dict[str, str]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "src" in attrs:
            self.srcs.append(attrs["src"])
        if "href" in attrs:
            self.hrefs.append(attrs["href"])
        if tag == "div" and "cand" in (attrs.get("class") or "").split():
            self.cands.append(attrs)


def test_gallery_is_self_contained_and_marks_hits(tiny_run):
    result = tiny_run
    with open(result.gallery_path, encoding="utf-8") as f:
        page_text = f.read()
    assert page_text == render_gallery(result, per_cell=2, arms=("cl", "gcl"))
    assert "http://" not in page_text and "https://" not in page_text and "url(" not in page_text
    page = _Page()
    page.feed(page_text)
    assert page.srcs and all(s.startswith("data:image/png;base64,") for s in page.srcs)
    assert not page.hrefs
    # 9 cells x 2 queries x 2 arms x top-5
    assert len(page.cands) == 9 * 2 * 2 * 5
    marked = sum(c["data-hit"] == "1" for c in page.cands)
    assert all(("hit" in c["class"]) == (c["data-hit"] == "1") for c in page.cands)
    art = result.first_seed
    order = __import__("numpy").random.default_rng([art.seed, 7]).permutation(len(art.test)).tolist()
    expected = 0
    for c, task in enumerate(art.tasks):
        cell = task.name.split(":", 1)[1]
        qids = list(task.queries["id"])
        for a in (order[(c * 2 + j) % len(order)] for j in range(2)):
            for arm in ("cl", "gcl"):
                expected += sum(cid in task.qrels[qids[a]] for cid in art.rankings[arm][cell][a][:5])
    assert marked == expected and page_text.count(" ✓</span>") == expected
    with pytest.raises(ValueError, match="no rankings"):
        render_gallery(result, arms=("cl", "nope"))
