"""Complete checkpoints only: a marker written last, and a resume that never picks a half-written checkpoint.

transformers' `Trainer` writes ``checkpoint-<step>/`` file by file (model weights, optimizer, scheduler, RNG
states, ``trainer_state.json``) and nothing says when it is done; ``resume_from_checkpoint=True`` takes the
highest-numbered directory, finished or not, so a run killed while saving cannot resume (or resumes from a
checkpoint without its optimizer state). `GCLTrainer` adds:

- a marker, ``gcl_checkpoint.json``, written by the main process once every process has written its files: the
  step and the size of every file, after flushing them to disk; the old checkpoints that ``save_total_limit``
  removes are removed only after that, so a kill never leaves no complete checkpoint behind;
- ``resume_from_checkpoint=True`` (or the string ``"last"``, as a command line passes it): the newest checkpoint
  whose marker is there and whose files all have the recorded sizes; the others are skipped with a warning
  naming them and why (transformers' own ``checkpoint-is-incomplete.txt`` of a JIT checkpoint counts as
  unfinished unless the marker was written after it);
- an explicit checkpoint path: refused when its marker says files are missing or truncated; a checkpoint without
  a marker (written by a plain `Trainer`) is used with a warning if it has ``trainer_state.json`` and weights;
- the marker also records the run's model: its backbone class, a digest of its parameter names and shapes, and
  of the weights training *started* from; a resume with another architecture or another starting model (e.g.
  ``--model B`` on model A's checkpoint) is refused by name, and so is a folder that is not a checkpoint;
- model weights read on resume: safetensors only, unless ``allow_pickle=True`` (pickle files can run code).
  The optimizer, scheduler and RNG states are always torch pickles; transformers reads them with
  ``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from gcl_hf.atomic import atomic_write_text, fsync_path
from gcl_hf.modeling.loading import PICKLE_SUFFIXES, UnsafeWeightsError

__all__ = ["JIT_SENTINEL", "MARKER", "CheckpointError", "CompleteCheckpointsMixin", "checkpoint_problem",
           "check_checkpoint_weights", "check_same_run", "last_complete_checkpoint", "mark_complete", "resolve_resume",
           "run_identity"]

logger = logging.getLogger(__name__)

#: The completion marker inside ``checkpoint-<step>/``.
MARKER = "gcl_checkpoint.json"
#: transformers' sentinel while a JIT (on SIGTERM) checkpoint is being written.
JIT_SENTINEL = "checkpoint-is-incomplete.txt"
#: ``resume_from_checkpoint`` strings that mean "the last complete checkpoint" (when no such directory exists).
_LAST = ("last", "true")
_PREFIX = f"{PREFIX_CHECKPOINT_DIR}-"
_SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")


class CheckpointError(OSError, ValueError):
    """A checkpoint that cannot be resumed: incomplete, not a checkpoint, or of another model (one line)."""


def run_identity(model: Any) -> dict[str, Any]:
    """What a run trains: the backbone's class, a digest of its parameter names and shapes (the architecture) and
    one of its weights now (call it when the run starts: the weights it starts from). LoRA weights are left out."""
    backbone = getattr(model, "backbone", model)
    base = backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone
    shapes, weights = hashlib.blake2b(digest_size=16), hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(base.state_dict().items()):
        if "lora_" in name or "modules_to_save" in name:
            continue
        name = name.replace(".base_layer", "")
        t = tensor.detach().to("cpu").contiguous()
        shapes.update(f"{name}|{tuple(t.shape)}".encode())
        weights.update(f"{name}|{t.dtype}".encode())
        if t.numel():
            weights.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    config = getattr(base, "config", None)
    return {"architecture": type(base).__name__, "name": getattr(config, "_name_or_path", None) or None,
            "shapes": shapes.hexdigest(), "start_weights": weights.hexdigest()}


def check_same_run(checkpoint: str | os.PathLike, identity: dict[str, Any]) -> None:
    """Refuse resuming ``checkpoint`` with a model of another architecture or other starting weights than the
    run that wrote it (its marker's ``model``); checkpoints written without one are not checked."""
    try:
        recorded = json.loads((Path(checkpoint) / MARKER).read_text(encoding="utf-8")).get("model")
    except (OSError, ValueError, AttributeError):
        return
    if not isinstance(recorded, dict):
        return
    theirs = f"{recorded.get('architecture')}" + (f" {recorded['name']!r}" if recorded.get("name") else "")
    ours = f"{identity['architecture']}" + (f" {identity['name']!r}" if identity.get("name") else "")
    if recorded.get("architecture") != identity["architecture"] or recorded.get("shapes") != identity["shapes"]:
        raise CheckpointError(f"{checkpoint}: a checkpoint of another architecture ({theirs}) than this run's model "
                              f"({ours}); resume with the model the run started from, or train into a new output_dir")
    if recorded.get("start_weights") != identity["start_weights"]:
        raise CheckpointError(f"{checkpoint}: continues a run that started from another model ({theirs}, other "
                              f"weights) than this run's ({ours}); resume with the --model that run started from, "
                              "or train into a new output_dir")


def _step(path: Path) -> int | None:
    suffix = path.name[len(_PREFIX):]
    return int(suffix) if path.name.startswith(_PREFIX) and suffix.isdigit() else None


def mark_complete(directory: str | os.PathLike, step: int, model: dict[str, Any] | None = None) -> Path:
    """Flush every file of ``directory`` to disk, then write the marker (atomically) listing them with their
    sizes (and the run's ``model`` identity, :func:`run_identity`). Call it on the main process once every
    process has written its files."""
    directory = Path(directory)
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MARKER):
        fsync_path(path)
        files[path.relative_to(directory).as_posix()] = path.stat().st_size
    marker = directory / MARKER
    return atomic_write_text(marker, json.dumps({"step": step, "files": files, "model": model}, indent=1,
                                                sort_keys=True))


def checkpoint_problem(directory: str | os.PathLike) -> str | None:
    """Why ``directory`` is not a complete checkpoint (``None`` when it is): no marker, or a file it lists is
    missing or has another size."""
    directory = Path(directory)
    marker = directory / MARKER
    if not marker.is_file():
        sentinel = ", and transformers' JIT sentinel says it was being written" if (directory / JIT_SENTINEL).exists() else ""
        return f"no {MARKER}: interrupted while saving, or not written by GCLTrainer{sentinel}"
    try:
        files = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable {MARKER} ({type(exc).__name__}: {exc})"
    for name, size in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing ({MARKER} lists it)"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} when the checkpoint was written (truncated?)"
    return None


def last_complete_checkpoint(output_dir: str | os.PathLike) -> tuple[str | None, list[tuple[str, str]]]:
    """The newest complete ``checkpoint-<step>`` of ``output_dir`` (``None`` if there is none) and the newer or
    incomplete ones it passed over, as ``(path, why)``."""
    output_dir = Path(output_dir)
    candidates = sorted((p for p in output_dir.glob(f"{_PREFIX}*") if p.is_dir() and _step(p) is not None),
                        key=_step, reverse=True)
    skipped = []
    for path in candidates:
        why = checkpoint_problem(path)
        if why is None:
            return str(path), skipped
        skipped.append((str(path), why))
    return None, skipped


def resolve_resume(resume_from_checkpoint: str | bool | None, output_dir: str | os.PathLike) -> str | None:
    """The checkpoint directory to resume from for a ``Trainer.train(resume_from_checkpoint=...)`` value (see the
    module docstring); ``None`` for a fresh start. Raises `ValueError` naming what is wrong."""
    if resume_from_checkpoint is None or resume_from_checkpoint is False:
        return None
    last = resume_from_checkpoint is True or (
        isinstance(resume_from_checkpoint, str) and resume_from_checkpoint.lower() in _LAST
        and not os.path.isdir(resume_from_checkpoint))
    if last:
        found, skipped = last_complete_checkpoint(output_dir)
        for path, why in skipped:
            logger.warning("not resuming from %s: %s", path, why)
        if found is None:
            listing = "; ".join(f"{Path(p).name}: {why}" for p, why in skipped) or "no checkpoint-* directory"
            raise CheckpointError(f"no complete checkpoint to resume from in {output_dir} ({listing}); pass a "
                             "checkpoint directory explicitly to use one written without a marker")
        logger.info("resuming from %s, the last complete checkpoint", found)
        return found
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        raise CheckpointError(f"resume_from_checkpoint={str(resume_from_checkpoint)!r}: no such checkpoint directory "
                         "(pass True or 'last' for the last complete checkpoint of output_dir)")
    why = checkpoint_problem(path)
    if why is not None:
        if not (path / MARKER).is_file() and not (path / JIT_SENTINEL).exists() and \
                not (path / "trainer_state.json").is_file():
            raise CheckpointError(f"{path} is not a training checkpoint (no {MARKER} nor trainer_state.json): pass a "
                                  "checkpoint-<step> folder of a run's output_dir, or 'last' for its newest")
        if (path / MARKER).is_file() or (path / JIT_SENTINEL).exists():
            raise CheckpointError(f"{path} is not a complete checkpoint: {why}")
        logger.warning("%s has no %s (not written by GCLTrainer); resuming from it as it is", path, MARKER)
    return str(path)


def check_checkpoint_weights(directory: str | os.PathLike, *, allow_pickle: bool) -> None:
    """Raise `UnsafeWeightsError` when ``directory`` holds model weights only as pickle files and
    ``allow_pickle`` is False (what `Trainer` would otherwise read with ``torch.load``)."""
    directory = Path(directory)
    names = [p.name for p in directory.iterdir() if p.is_file()]
    if allow_pickle or any(name in _SAFE_WEIGHTS or name.endswith(".safetensors") for name in names):
        return
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES) and n.startswith(("pytorch_model",
                                                                                         "adapter_model")))
    if pickles:
        raise UnsafeWeightsError(
            f"{directory}: model weights only as pickle ({', '.join(pickles)}), which can run code when loaded; "
            "convert them to safetensors, or set allow_pickle=True (--allow_pickle) if you trust this checkpoint"
        )


class CompleteCheckpointsMixin:
    """`Trainer` overrides (mixed in before `Trainer`) that mark complete checkpoints and resume only from those.

    ``resumed_from`` is the checkpoint the last `train` call resumed from (``None`` for a fresh start);
    ``args.allow_pickle`` allows pickle model weights on resume.
    """

    resumed_from: str | None = None

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """`Trainer.train`, resuming only from a complete checkpoint: ``True`` or ``"last"`` picks the newest
        complete one of ``output_dir`` (skipping half-written ones with a warning), a path must be complete;
        pickle model weights are refused unless ``args.allow_pickle``."""
        resume = resolve_resume(resume_from_checkpoint, self.args.output_dir)
        self._run_identity = run_identity(self.model)
        if resume is not None:
            check_same_run(resume, self._run_identity)
            check_checkpoint_weights(resume, allow_pickle=getattr(self.args, "allow_pickle", False))
        self.resumed_from = resume
        return super().train(resume, *args, **kwargs)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """`Trainer._save_checkpoint`, then the marker once every process has written its files; the checkpoints
        ``save_total_limit`` removes are removed only after that."""
        limit = self.args.save_total_limit
        self.args.save_total_limit = None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        run_dir = self._get_output_dir(trial=trial)
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            mark_complete(os.path.join(run_dir, f"{_PREFIX}{self.state.global_step}"), self.state.global_step,
                          getattr(self, "_run_identity", None))
            rotate_checkpoints(output_dir=run_dir, save_total_limit=limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
