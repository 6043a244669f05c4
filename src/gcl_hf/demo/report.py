"""The demo's printed report: mean±spread tables (rich) and the verdict line.

Everything reads the ``results.json`` content written by :func:`gcl_hf.demo.pipeline.run_demo`, so a saved
run can be re-rendered (``print_report(json.load(...))``) without re-training.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from gcl_hf.demo.stats import SUMMARY_ROWS, mean_sd

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table

__all__ = ["print_report", "render_table", "table_text", "verdict_lines", "verdict_text"]

_ARROW = "→"
_POOLS = {"mixed": "mixed pool", "local": "local pools"}
_STYLE = {"win": "green", "loss": "red"}


def _pm(mean: float, sd: float, digits: int = 1) -> str:
    return f"{mean:.{digits}f}±{sd:.{digits}f}"


def _label(row: str) -> str:
    return row.replace("->", f" {_ARROW} ") if "->" in row else row


def _delta(entry: dict[str, Any]) -> str:
    diff = round(entry["diff"], 1) + 0.0  # no "-0.0"
    text = f"{diff:+.1f} {entry['verdict']}"
    style = _STYLE.get(entry["verdict"])
    return f"[{style}]{text}[/{style}]" if style else text


def render_table(results: dict[str, Any], pool: str = "mixed", metric: str = "recall@1") -> Table:
    """One row per query→candidate cell and per summary row; one column per model (``mean±spread`` over
    seeds, in %), and for every arm but the baseline its difference to the baseline with the decision
    rule's verdict (win / tie / loss). The mixed-pool table ends with the image–text modality gap."""
    from rich import box
    from rich.table import Table

    if pool not in _POOLS:
        raise ValueError(f"pool must be one of {list(_POOLS)}, got {pool!r}")
    config, models, baseline = results["config"], list(results["models"]), results["baseline"]
    summary = results["summary"][pool][metric]
    compared = [m for m in models if m in results["comparisons"][pool]] if metric == "recall@1" else []
    seeds = ", ".join(str(s) for s in results["seeds"])
    n = config["num_test"]
    where = (f"one mixed pool of {3 * n} items (pictures, captions, fused)" if pool == "mixed"
             else f"local pools ({n} candidates of the target modality)")
    k = metric.split("@")[1]
    title = f"Recall@{k} (%), {where}; {n} queries per cell; mean±spread over seeds {seeds}"
    base_label = results["models"][baseline]["label"]
    caption = (f"{config['num_train']} train pairs; {config['pretrain_steps']} pre-training steps (CLIP loss), then "
               f"{config['steps']} fine-tuning steps per arm, batch {config['batch_size']}, lr {config['lr']:g}.\n"
               + "\n".join(results["models"][m]["note"] for m in models if results["models"][m]["note"]))
    if compared:
        caption += (f"\nΔ vs {base_label}: difference of means; win/loss when larger than the larger spread, "
                    "else tie.")
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, title_justify="left", caption_justify="left",
                  pad_edge=False, padding=(0, 1))
    table.add_column(f"query {_ARROW} cand.", no_wrap=True)
    for m in models:
        table.add_column(results["models"][m]["label"], justify="right", no_wrap=True)
        if m in compared:
            table.add_column(f"Δ vs {base_label}", justify="right", no_wrap=True)
    rows = list(results["rows"])
    for i, row in enumerate(rows):
        cells = [_label(row)]
        for m in models:
            cells.append(_pm(summary[m][row]["mean"], summary[m][row]["sd"]))
            if m in compared:
                cells.append(_delta(results["comparisons"][pool][m][row]))
        last_cell = i == len(rows) - len(SUMMARY_ROWS) - 1
        table.add_row(*cells, end_section=last_cell or i == len(rows) - 1)
    if pool == "mixed":
        for label, key in (("gap ‖μi−μt‖", "centroid_distance"), ("cos(i, t)", "matched_cosine")):
            cells = [label]
            for m in models:
                values = [results["seeds"][s]["models"][m]["modality_gap"][key]["image-text"] for s in results["seeds"]]
                cells.append(_pm(*mean_sd(values), digits=3))
                if m in compared:
                    cells.append("")
            table.add_row(*cells)
    return table


def verdict_text(results: dict[str, Any]) -> str:
    """One line: the pre-registered verdict on the paper's claim, and the per-cell win/tie/loss counts."""
    verdict = results.get("verdict")
    if not verdict:
        return "verdict: none (no +GCL arm in this run)"
    arm = results["models"][verdict["arm"]]["label"]
    base = results["models"][verdict["baseline"]]["label"]
    counts = verdict["cell_counts"]
    line = (f"verdict ({arm} vs {base}, Recall@1, mixed pool, pre-registered rule): {verdict['verdict']}"
            + (f" ({'; '.join(verdict['reasons'])})" if verdict["reasons"] else "")
            + f"; the nine cells: {counts['win']} win, {counts['tie']} tie, {counts['loss']} loss")
    return line


def verdict_lines(results: dict[str, Any], width: int = 100) -> list[str]:
    """:func:`verdict_text` broken at its ``; `` boundaries into lines of at most ``width`` characters where it
    can be (continuation lines indented), so a terminal never wraps it mid-phrase."""
    lines: list[str] = []
    for part in verdict_text(results).split("; "):
        if lines and len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] += "; " + part
        else:
            lines.append(("  " + part) if lines else part)
    return [line + (";" if i < len(lines) - 1 else "") for i, line in enumerate(lines)]


def print_report(results: dict[str, Any], console: Any = None) -> None:
    """Print the mixed-pool and local-pool Recall@1 tables and the verdict to ``console`` (default: stdout).

    Into a pipe or a file the tables go without trailing spaces."""
    from rich.console import Console

    console = console or Console()
    for renderable in (render_table(results, "mixed"), "", render_table(results, "local"), ""):
        _print_stripped(console, renderable)
    for line in verdict_lines(results, console.width):
        console.print(line, soft_wrap=True, highlight=False)


def _print_stripped(console: Any, renderable: Any) -> None:
    if console.is_terminal:
        console.print(renderable)
        return
    with console.capture() as capture:
        console.print(renderable)
    console.file.write("".join(line.rstrip() + "\n" for line in capture.get().splitlines()))


def table_text(results: dict[str, Any], pool: str = "mixed", metric: str = "recall@1", width: int = 140) -> str:
    """A table as plain text (no colours), e.g. for a README."""
    from rich.console import Console

    with open(os.devnull, "w") as sink:
        console = Console(width=width, record=True, color_system=None, file=sink)
        console.print(render_table(results, pool, metric))
        text = console.export_text(styles=False)
    return "\n".join(line.rstrip() for line in text.splitlines())
