"""``gallery.html``: a self-contained page of retrieved examples, two arms side by side.

For each of the nine cells, a few queries of the first seed (drawn at random, not picked by outcome) with
the top-5 candidates of two arms (by default +CL and +GCL) from the mixed pool; relevant candidates are
marked as hits (green border, ✓). Pictures are inlined as base64 PNG data URIs, so the file needs nothing
else — no network, no neighbouring files.
"""

from __future__ import annotations

import base64
import html
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from gcl_hf.demo.tasks import MODALITY_LABELS

if TYPE_CHECKING:  # pragma: no cover
    from gcl_hf.demo.results import DemoResult

__all__ = ["render_gallery", "write_gallery"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 16px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin: 22px 0 6px; border-bottom: 1px solid #ccc; }
p.note { font-size: 13px; max-width: 1100px; }
.row { display: grid; grid-template-columns: 190px 1fr 1fr; gap: 10px; margin: 8px 0; align-items: start; }
.query, .cand { border: 2px solid #bbb; border-radius: 4px; padding: 3px; background: #fafafa; font-size: 11px; }
.query { border-color: #555; background: #eef; }
.arm { border-left: 3px solid #ddd; padding-left: 6px; }
.arm h3 { font-size: 12px; margin: 0 0 3px; }
.cands { display: grid; grid-template-columns: repeat(5, 1fr); gap: 4px; }
.cand.hit { border-color: #1a9641; background: #e9f7ec; }
.cand.miss { border-color: #ddd; }
.mark { font-weight: bold; } .hit .mark { color: #1a9641; } .miss .mark { color: #b2182b; }
img { width: 72px; height: 72px; image-rendering: pixelated; display: block; margin: 2px 0; }
.mod { color: #666; font-size: 10px; text-transform: uppercase; }
"""


def _png_bytes(test: Any, column: str) -> list[bytes]:
    return [row["bytes"] for row in test.with_format("arrow")[column].to_pylist()]


def _img(png: bytes) -> str:
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _content(label: str, png: bytes | None, text: str | None) -> str:
    parts = [f'<div class="mod">{label}</div>']
    if png is not None:
        parts.append(_img(png))
    if text is not None:
        parts.append(f"<div>{html.escape(text)}</div>")
    return "".join(parts)


def render_gallery(result: DemoResult, per_cell: int = 3, arms: tuple[str, str] = ("cl", "gcl")) -> str:
    """The gallery page as a string (see the module docstring)."""
    art, results = result.first_seed, result.results
    for arm in arms:
        if arm not in art.rankings:
            raise ValueError(f"gallery arm {arm!r} has no rankings (models: {sorted(art.rankings)})")
    test = art.test
    ids = list(test["id"][:])
    row_of = {item: i for i, item in enumerate(ids)}
    cand_png, query_png = _png_bytes(test, "image"), _png_bytes(test, "query_image")
    cand_text, query_text = list(test["text"][:]), list(test["query_text"][:])
    order = np.random.default_rng([art.seed, 7]).permutation(len(ids)).tolist()
    labels = {m: results["models"][m]["label"] for m in arms}
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>gcl-hf demo: retrieval gallery</title>", f"<style>{_CSS}</style></head><body>",
           (f"<h1>gcl-hf demo: top-5 of {html.escape(labels[arms[0]])} and {html.escape(labels[arms[1]])}, "
            f"seed {art.seed}</h1>"),
           ('<p class="note">Mixed pool of pictures, captions and fused items (picture + caption). Each picture '
           "shows an object its caption does not name; each caption names, after a marker such as "
           "&ldquo;beside the picture&rdquo;, an object its picture does not show. Queries come from another "
           "rendering and wording of the item. <b>Green, ✓: a relevant candidate</b> (same content as seen "
           "through the query); ✗: not relevant. Queries are drawn at random per cell, not chosen by outcome."
            "</p>")]
    for c, task in enumerate(art.tasks):
        cell = task.name.split(":", 1)[1]
        q_label = MODALITY_LABELS[task.meta["query_modality"]]
        recalls = ", ".join(f"{labels[m]} R@1 {100 * results['seeds'][str(art.seed)]['models'][m]['cells'][cell]['recall@1']:.1f}%"
                            for m in arms)
        out.append(f"<h2>{html.escape(cell.replace('->', ' → '))} <small>({recalls} on this seed)</small></h2>")
        query_ids = list(task.queries["id"])
        for a in (order[(c * per_cell + j) % len(order)] for j in range(per_cell)):
            qid = query_ids[a]
            item = row_of[qid.split(":")[0]]
            relevant = task.qrels[qid]
            query = _content(f"query ({q_label}), {len(relevant)} relevant",
                             query_png[item] if q_label in ("image", "fused") else None,
                             query_text[item] if q_label in ("text", "fused") else None)
            out.append(f'<div class="row"><div class="query">{query}</div>')
            for m in arms:
                out.append(f'<div class="arm"><h3>{html.escape(labels[m])}</h3><div class="cands">')
                for rank, cid in enumerate(art.rankings[m][cell][a][:5], start=1):
                    item_id, label = cid.split(":")
                    j = row_of[item_id]
                    hit = cid in relevant
                    body = _content(label, cand_png[j] if label in ("image", "fused") else None,
                                    cand_text[j] if label in ("text", "fused") else None)
                    out.append(f'<div class="cand {"hit" if hit else "miss"}" data-hit="{int(hit)}">'
                               f'<span class="mark">{rank} {"✓" if hit else "✗"}</span>{body}</div>')
                out.append("</div></div>")
            out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out)


def write_gallery(result: DemoResult, path: str | os.PathLike, per_cell: int = 3,
                  arms: tuple[str, str] = ("cl", "gcl")) -> str:
    """Write :func:`render_gallery` to ``path`` (UTF-8) and return the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_gallery(result, per_cell=per_cell, arms=arms))
    return path
