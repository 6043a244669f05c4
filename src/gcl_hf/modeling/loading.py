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

__all__ = ["PICKLE_SUFFIXES", "UnsafeWeightsError", "explain_unsafe", "load_backbone", "load_processor",
           "safe_loading_kwargs"]

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

    with explain_unsafe(name_or_path, allow_pickle):
        return AutoModel.from_pretrained(
            name_or_path, revision=revision, **safe_loading_kwargs(kwargs, allow_pickle=allow_pickle)
        )


def load_processor(name_or_path: str | os.PathLike, *, revision: str | None = None, **kwargs: Any) -> Any:
    """``AutoProcessor.from_pretrained`` under the loading policy (never remote code, never a prompt)."""
    from transformers import AutoProcessor

    if kwargs.pop("trust_remote_code", False):
        raise ValueError("gcl-hf never loads remote code: trust_remote_code=True is not supported")
    return AutoProcessor.from_pretrained(name_or_path, revision=revision, trust_remote_code=False, **kwargs)
