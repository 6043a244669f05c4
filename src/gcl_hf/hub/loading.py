"""Load a published GCL model back, in any of its three forms, from a Hub repo or a local directory.

One snapshot per load (the revision is resolved to a commit first); safetensors only unless the caller opts
in with ``allow_pickle=True``; never ``trust_remote_code``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, hf_hub_download

from gcl_hf.hub.adapter import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILES,
    GCL_EXTRA_WEIGHTS_FILE,
    GCL_SETTINGS_FILE,
    load_adapter,
    read_settings,
)
from gcl_hf.modeling.loading import PICKLE_SUFFIXES, UnsafeWeightsError, load_backbone
from gcl_hf.modeling.model import GCLModel


def _version() -> str:
    from gcl_hf import __version__

    return __version__


def load(
    repo_id: str | os.PathLike,
    *,
    revision: str | None = None,
    form: str | None = None,
    allow_pickle: bool = False,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> GCLModel:
    """Load a published GCL model (Hub repo id or local directory) as a `GCLModel`, in eval mode.

    ``form`` is detected from the files when not given: ``adapter_config.json`` → adapter (the base model named
    there is loaded, then the LoRA weights via peft); ``config.json`` with ``model_type: gcl`` → full; any other
    ``config.json`` → a plain backbone wrapped with the settings of ``gcl_config.json`` (or defaults).
    ``revision`` (branch, tag or commit sha) is resolved to one commit so every file comes from the same
    snapshot. Pickle weights raise `UnsafeWeightsError` unless ``allow_pickle=True``.
    """
    local = Path(repo_id).is_dir()
    source = str(repo_id)
    if local:
        files = [p.relative_to(repo_id).as_posix() for p in Path(repo_id).rglob("*") if p.is_file()]
        sha = None
    else:
        info = HfApi(token=token, library_name="gcl-hf", library_version=_version()).model_info(
            source, revision=revision)
        files = [s.rfilename for s in info.siblings or []]
        sha = info.sha
    where = f"{source}@{revision or 'main'}" if not local else source

    def fetch(filename: str) -> str:
        if local:
            return str(Path(source) / filename)
        return hf_hub_download(source, filename, revision=sha, token=token, cache_dir=cache_dir)

    detected = _detect_form(files, fetch, where)
    if form is not None and form != detected:
        raise ValueError(f"{where}: asked for form={form!r} but the repo holds the {detected!r} form")
    weights = ("adapter_model",) if detected == "adapter" else ("model",)
    _check_weights(files, weights, where, allow_pickle)
    hub_kwargs: dict[str, Any] = {} if local else {"revision": sha, "token": token, "cache_dir": cache_dir}

    if detected == "full":
        model = GCLModel.from_pretrained(source, allow_pickle=allow_pickle, **hub_kwargs)
    elif detected == "backbone":
        backbone = load_backbone(source, allow_pickle=allow_pickle, **hub_kwargs)
        model = GCLModel.from_backbone(backbone, **_read_settings(files, fetch))
    else:
        model = _load_adapter(files, fetch, where, allow_pickle, token, cache_dir)
    return model.eval()


def _detect_form(files: list[str], fetch: Any, where: str) -> str:
    if ADAPTER_CONFIG_FILE in files:
        return "adapter"
    if "config.json" not in files:
        raise ValueError(f"{where}: neither config.json nor {ADAPTER_CONFIG_FILE}: not a published model "
                         f"(files: {sorted(files)})")
    config = json.loads(Path(fetch("config.json")).read_text(encoding="utf-8"))
    return "full" if config.get("model_type") == "gcl" else "backbone"


def _check_weights(files: list[str], stems: tuple[str, ...], where: str, allow_pickle: bool) -> None:
    safe = [f for f in files if f.endswith(".safetensors") or f.endswith(".safetensors.index.json")]
    if any(Path(f).name.startswith(stems) for f in safe):
        return
    pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES) or f.endswith(".bin.index.json")]
    if pickles and not allow_pickle:
        raise UnsafeWeightsError(
            f"{where}: only pickle weights ({', '.join(sorted(pickles))}), no safetensors. Pickle files can run "
            "code when loaded, so gcl-hf refuses them; convert the weights to safetensors, or pass "
            "allow_pickle=True if you trust this repo"
        )
    if not pickles:
        raise OSError(f"{where}: no weights found (expected {stems[0]}.safetensors; files: {sorted(files)})")


def _read_settings(files: list[str], fetch: Any) -> dict[str, Any]:
    return read_settings(fetch(GCL_SETTINGS_FILE)) if GCL_SETTINGS_FILE in files else {}


def _load_adapter(files: list[str], fetch: Any, where: str, allow_pickle: bool, token: str | bool | None,
                  cache_dir: Any) -> GCLModel:
    """The base model named in ``adapter_config.json``, wrapped with the saved GCL settings, with the adapter
    directory attached (its files fetched from one snapshot, so they sit together in one local directory)."""
    weights = [f for f in ADAPTER_WEIGHTS_FILES if f in files][:1]  # safetensors when there (see _check_weights)
    for filename in (*weights, GCL_SETTINGS_FILE, GCL_EXTRA_WEIGHTS_FILE):
        if filename in files:
            fetch(filename)
    config_path = Path(fetch(ADAPTER_CONFIG_FILE))
    adapter_config = json.loads(config_path.read_text(encoding="utf-8"))
    base_id = adapter_config.get("base_model_name_or_path")
    if not base_id:
        raise ValueError(f"{where}: {ADAPTER_CONFIG_FILE} has no base_model_name_or_path; cannot load the base model")
    base_revision = adapter_config.get("revision")
    if not Path(base_id).is_dir():
        base_info = HfApi(token=token, library_name="gcl-hf", library_version=_version()).model_info(
            base_id, revision=base_revision)
        _check_weights([s.rfilename for s in base_info.siblings or []], ("model",),
                       f"base model {base_id}@{base_revision or 'main'}", allow_pickle)
        base_revision = base_info.sha
    backbone = load_backbone(base_id, revision=base_revision, token=token, cache_dir=cache_dir,
                             allow_pickle=allow_pickle)
    model = GCLModel.from_backbone(backbone, **_read_settings(files, fetch))
    return load_adapter(model, config_path.parent, is_trainable=True, name=where)


__all__ = ["PICKLE_SUFFIXES", "UnsafeWeightsError", "load"]
