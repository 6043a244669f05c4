"""The one policy for reading model weights: safetensors only unless the caller opts in, never remote code.

Pickle files (``pytorch_model.bin``, ``.pt``, ...) can run arbitrary code when loaded, and a checkpoint's
``auto_map`` can point at Python files in the repo. Every place gcl-hf reads a model (``GCLModel.from_pretrained``
and ``from_backbone``, ``AutoModel`` after ``import gcl_hf``, ``gcl_hf.hub.load``, the command line) goes
through :func:`safe_loading_kwargs`: ``use_safetensors=True`` unless ``allow_pickle=True``, and
``trust_remote_code=False`` always — passed explicitly, so transformers never asks at a prompt.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["PICKLE_SUFFIXES", "IncompleteModelError", "ProcessorNotFoundError", "RemoteCodeError", "UnsafeWeightsError",
           "check_can_tokenize", "explain_remote_code", "explain_unsafe", "find_processor", "load_backbone",
           "load_processor", "safe_loading_kwargs"]

#: Weight-file suffixes that are (or may be) Python pickles.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class UnsafeWeightsError(OSError):
    """A checkpoint offers only pickle weights (``.bin``/``.pt``/...), which can run code when loaded."""


def safe_loading_kwargs(kwargs: dict[str, Any], *, allow_pickle: bool = False) -> dict[str, Any]:
    """``kwargs`` for a transformers ``from_pretrained`` call under the loading policy.

    Refuses ``trust_remote_code=True`` (gcl-hf never runs a checkpoint's code) and an explicit
    ``use_safetensors=False`` without ``allow_pickle``.
    """
    out = dict(kwargs)
    if out.get("trust_remote_code"):
        raise ValueError("gcl-hf never loads remote code: trust_remote_code=True is not supported")
    out["trust_remote_code"] = False
    if allow_pickle:
        out.setdefault("use_safetensors", None)
    elif out.get("use_safetensors") is False:
        raise UnsafeWeightsError("use_safetensors=False loads pickle weights: pass allow_pickle=True to opt in")
    else:
        out["use_safetensors"] = True
    return out


@contextlib.contextmanager
def explain_unsafe(name: str | os.PathLike, allow_pickle: bool) -> Iterator[None]:
    """Turn transformers' "no safetensors file" error into an `UnsafeWeightsError` naming the checkpoint."""
    try:
        yield
    except UnsafeWeightsError:
        raise
    except OSError as err:
        if allow_pickle or "safetensors" not in str(err).lower():
            raise
        pickles = _local_pickles(name)
        found = f" (it holds {', '.join(pickles)})" if pickles else ""
        raise UnsafeWeightsError(
            f"{os.fspath(name)}: no safetensors weights{found}. Pickle files can run code when loaded, so gcl-hf "
            "refuses them; convert the weights to safetensors, or pass allow_pickle=True if you trust them"
        ) from err


def _local_pickles(name: str | os.PathLike) -> list[str]:
    if not os.path.isdir(name):
        return []
    return sorted(f for f in os.listdir(name) if f.endswith(PICKLE_SUFFIXES))


def load_backbone(
    name_or_path: str | os.PathLike, *, revision: str | None = None, allow_pickle: bool = False, **kwargs: Any
) -> Any:
    """``AutoModel.from_pretrained`` of a CLIP-like checkpoint under the loading policy."""
    from transformers import AutoModel

    with explain_unsafe(name_or_path, allow_pickle), explain_remote_code(name_or_path):
        return AutoModel.from_pretrained(
            name_or_path, revision=revision, **safe_loading_kwargs(kwargs, allow_pickle=allow_pickle)
        )


def load_processor(name_or_path: str | os.PathLike, *, revision: str | None = None, **kwargs: Any) -> Any:
    """``AutoProcessor.from_pretrained`` under the loading policy (never remote code, never a prompt), refusing a
    processor that cannot tokenize (a directory without tokenizer files loads as an empty vocabulary, which maps
    every text of one length to the same ids) with :class:`IncompleteModelError`."""
    from transformers import AutoProcessor

    if kwargs.pop("trust_remote_code", False):
        raise ValueError("gcl-hf never loads remote code: trust_remote_code=True is not supported")
    with explain_remote_code(name_or_path):
        processor = AutoProcessor.from_pretrained(name_or_path, revision=revision, trust_remote_code=False, **kwargs)
    check_can_tokenize(processor, name_or_path)
    return processor


class ProcessorNotFoundError(ValueError):
    """No processor was given, attached or found beside the model or its base model; ``tried`` lists each
    candidate as ``"name: why"`` (so a caller can phrase its own advice, e.g. the CLI's ``--processor``)."""

    def __init__(self, message: str, tried: list[str]):
        super().__init__(message)
        self.tried = tried


def find_processor(model: Any, *, processor: str | os.PathLike | None = None,
                   name_or_path: str | os.PathLike | None = None, revision: str | None = None) -> Any:
    """The processor that goes with ``model`` — the one place that decides it.

    ``processor`` (a path or Hub id) when given, and only it; else the processor attached to the model
    (``model.processor``); else the first that loads of: ``name_or_path`` (where the caller loaded the model
    from, loaded at ``revision``), the model's own ``name_or_path`` (its saved directory), the backbone's, and
    the base model recorded in ``config.backbone_config``. Raises :class:`ProcessorNotFoundError` naming every
    candidate and why it failed (an offline Hub id says so)."""
    if processor is not None:
        candidates = [processor]
    else:
        attached = getattr(model, "processor", None)
        if attached is not None:
            return attached
        unwrap = getattr(model, "_unwrapped_backbone", None)
        backbone = unwrap() if callable(unwrap) else model
        candidates = [name_or_path, getattr(model, "name_or_path", None), getattr(backbone, "name_or_path", None),
                      getattr(getattr(getattr(model, "config", None), "backbone_config", None), "_name_or_path", None)]
    tried = []
    for name in dict.fromkeys(os.fspath(n) for n in candidates if n):
        try:
            at = revision if name_or_path is not None and name == os.fspath(name_or_path) else None
            return load_processor(name, revision=at)
        except Exception as exc:  # noqa: BLE001 - every candidate is reported
            tried.append(f"{name}: {_first_line(exc)}")
    detail = ("; tried " + "; ".join(tried)) if tried else " (the model has no name_or_path to look in)"
    raise ProcessorNotFoundError(
        "the model needs a processor and none was found: pass processor=AutoProcessor.from_pretrained(<base model>) "
        "or attach one with `model.processor = processor` (save_pretrained then saves it beside the model)" + detail,
        tried)


def _first_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and len(exc.args) == 1 else str(exc)
    return next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)


class IncompleteModelError(OSError):
    """A model or processor directory that loads but lacks what it needs to compute (e.g. tokenizer files)."""


class RemoteCodeError(OSError):
    """A checkpoint whose classes exist only as custom code in the repo, which gcl-hf never runs."""


#: a text whose words any real vocabulary (word pieces, BPE, bytes) tokenizes to non-special ids
_PROBE = "a photo of a dog"
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "vocab.txt", "spiece.model", "tokenizer.model",
                    "sentencepiece.bpe.model")


def check_can_tokenize(processor: Any, name_or_path: str | os.PathLike) -> None:
    """Raise :class:`IncompleteModelError` naming ``name_or_path`` when ``processor`` has a tokenizer that maps a
    plain text to special/unknown tokens only (no vocabulary: its tokenizer files are missing)."""
    tokenizer = getattr(processor, "tokenizer", processor if callable(getattr(processor, "encode", None)) else None)
    if tokenizer is None or not callable(getattr(tokenizer, "encode", None)):
        return
    ids = tokenizer.encode(_PROBE, add_special_tokens=False)
    special = set(getattr(tokenizer, "all_special_ids", ()) or ())
    if ids and not set(ids) <= special:
        return
    present = [f for f in _TOKENIZER_FILES if os.path.isfile(os.path.join(os.fspath(name_or_path), f))]
    missing = "" if present else f" (no {', '.join(_TOKENIZER_FILES[:3])}, ...)"
    raise IncompleteModelError(
        f"{os.fspath(name_or_path)}: the processor cannot tokenize: its tokenizer has {len(tokenizer)} tokens, all "
        f"special{missing}; copy the base model's tokenizer files into this directory, or pass the processor "
        "(--processor) of the model it was trained from")


@contextlib.contextmanager
def explain_remote_code(name: str | os.PathLike) -> Iterator[None]:
    """Turn transformers' "pass trust_remote_code=True" refusal into a :class:`RemoteCodeError` that does not
    suggest an option gcl-hf never accepts."""
    try:
        yield
    except (ValueError, OSError) as err:
        if "trust_remote_code" not in str(err) or isinstance(err, RemoteCodeError):
            raise
        raise RemoteCodeError(
            f"{os.fspath(name)}: its config names classes that exist only as custom code in the repository "
            "(auto_map), and gcl-hf never runs a checkpoint's code; use a checkpoint of a model class that "
            "transformers implements") from None
