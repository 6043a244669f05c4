"""The suite's context (device, sizes, time budget, where lines go) and its JSON lines.

One line per figure, written (and flushed) as soon as the figure is measured, so a run stopped by a timeout
keeps what it measured. Every line has ``bench`` ("gpu_suite"), ``figure``, ``status`` ("ok", "error" or
"skipped"), ``device``, ``torch``, ``command``, ``dry_run``; an ``ok`` line has ``value`` and ``unit``, and
``ratio`` / ``target`` / ``pass`` / ``reference`` where the figure has them (``pass`` is null off a GPU and in
a dry run: a target is a GPU target).
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import platform
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from common import timed


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from common import machine_info

    return f"cpu ({machine_info()['cpu']})"


@dataclass
class Context:
    """What every figure needs: the device, whether this is the dry run, the output file and the clock."""

    device: torch.device
    dry_run: bool
    out: Path
    budget_s: float
    command: str = field(default_factory=lambda: " ".join([Path(sys.argv[0]).name] + sys.argv[1:]))
    start: float = field(default_factory=time.perf_counter)
    written: list[dict[str, Any]] = field(default_factory=list)

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    def size(self, full: Any, dry: Any) -> Any:
        """``full`` on the device, ``dry`` in the dry run."""
        return dry if self.dry_run else full

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def autocast(self) -> Any:
        """bf16 autocast, as GPU training and encoding run (also in the dry run, on the CPU)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def times(self, fn: Callable[[], Any], warmup: int, steps: int) -> list[float]:
        """Wall seconds of each of ``steps`` calls after ``warmup`` untimed ones (synchronised on CUDA)."""
        for _ in range(warmup):
            fn()
        return [timed(fn, self.device)[0] for _ in range(steps)]

    def peak_reset(self) -> None:
        if self.on_gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def header(self) -> dict[str, Any]:
        info = {"bench": "gpu_suite", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "device": device_name(self.device), "torch": torch.__version__, "cuda": torch.version.cuda,
                "python": platform.python_version(), "dry_run": self.dry_run, "command": self.command}
        try:
            import transformers

            info["transformers"] = transformers.__version__
        except ImportError:  # pragma: no cover
            pass
        return info

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        line = {**self.header(), **record}
        if line.get("status") == "ok" and "pass" not in line:
            line["pass"] = None
        if not self.on_gpu or self.dry_run:
            line["pass"] = None  # the targets are GPU targets
        self.out.parent.mkdir(parents=True, exist_ok=True)
        with open(self.out, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, default=float) + "\n")
        self.written.append(line)
        value = line.get("value")
        shown = f"{value:.4g} {line.get('unit', '')}" if isinstance(value, (int, float)) else line.get("reason", "")
        target = f"  target {line['target']}" if line.get("target") else ""
        ok = "" if line.get("pass") is None else ("  PASS" if line["pass"] else "  MISS")
        print(f"[{self.elapsed():6.1f}s] {line['figure']}: {line['status']} {shown}{target}{ok}", flush=True)
        return line


def figure(name: str, value: float, unit: str, *, target: str | None = None, passed: bool | None = None,
           ratio: float | None = None, reference: str | None = None, **extra: Any) -> dict[str, Any]:
    """An ``ok`` line's own fields."""
    out = {"figure": name, "status": "ok", "value": value, "unit": unit, "ratio": ratio, "target": target,
           "pass": passed, "reference": reference}
    out.update(extra)
    return out


@dataclass(frozen=True)
class Job:
    """One measurement: ``run(ctx)`` yields the lines of ``figures`` (in that order); ``budget_s`` is the time it
    may need on the device (it is skipped when less is left)."""

    name: str
    figures: tuple[str, ...]
    run: Callable[[Context], Iterator[dict[str, Any]]]
    budget_s: float

    def selected(self, only: list[str] | None) -> bool:
        if not only:
            return True
        names = {self.name, self.name.split("/")[0], *self.figures, *(f.split("/")[0] for f in self.figures)}
        return any(o in names for o in only)


def run_jobs(ctx: Context, jobs: list[Job]) -> None:
    """Run each job in turn; an exception becomes an ``error`` line for each figure it had not yet written,
    a job that no longer fits the time budget a ``skipped`` line; memory is released between jobs."""
    for job in jobs:
        left = ctx.budget_s - ctx.elapsed()
        if not ctx.dry_run and job.budget_s > left:
            for name in job.figures:
                ctx.write({"figure": name, "status": "skipped",
                           "reason": f"time budget: needs ~{job.budget_s:.0f}s, {left:.0f}s left"})
            continue
        done: set[str] = set()
        started = time.perf_counter()
        try:
            for record in job.run(ctx):
                record.setdefault("seconds", round(time.perf_counter() - started, 2))
                ctx.write(record)
                done.add(record["figure"])
        except Exception as exc:  # noqa: BLE001 - one figure's failure must not stop the suite
            text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            tail = traceback.format_exc().strip().splitlines()[-12:]
            for name in job.figures:
                if name not in done:
                    ctx.write({"figure": name, "status": "error", "error": text[:2000], "traceback": tail,
                               "seconds": round(time.perf_counter() - started, 2)})
            del exc
        gc.collect()
        if ctx.on_gpu:
            torch.cuda.empty_cache()
