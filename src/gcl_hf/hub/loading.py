"""Load a published GCL model back, in any of its three forms, from a Hub repo or a local directory.

One snapshot per load (``huggingface_hub.snapshot_download``: one commit, its refs recorded in the local Hub
cache, pickle weights never downloaded unless allowed); safetensors only unless the caller opts in with
``allow_pickle=True``; never ``trust_remote_code``. Offline (``HF_HUB_OFFLINE=1``, or the Hub unreachable) a repo
loaded before comes from the local Hub cache, as transformers does: the revision resolves through the cache's
refs to a cached snapshot.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import (HFValidationError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                    RepositoryNotFoundError, RevisionNotFoundError)
from huggingface_hub.utils import validate_repo_id

from gcl_hf.hub.adapter import (
    ADAPTER_CONFIG_FILE,
    GCL_SETTINGS_FILE,
    load_adapter,
    read_settings,
)
from gcl_hf.modeling.loading import PICKLE_SUFFIXES, UnsafeWeightsError, load_backbone
from gcl_hf.modeling.model import GCLModel

logger = logging.getLogger(__name__)


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's connection/timeout errors (huggingface_hub's client is httpx2 or httpx)."""
    found: list[type[BaseException]] = []
    for name in ("httpx2", "httpx", "requests"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        error = getattr(module, "TransportError", None) or getattr(module, "ConnectionError", None)
        if isinstance(error, type) and issubclass(error, BaseException):
            found.append(error)
    return tuple(found)


#: errors that mean "the Hub cannot be reached": loading then falls back to the local Hub cache
NETWORK_ERRORS: tuple[type[BaseException], ...] = (OfflineModeIsEnabled, *_transport_errors())


class HubCacheMissError(FileNotFoundError):
    """Offline, and the repo/revision is not in the local Hub cache."""



def library_version() -> str:
    """gcl-hf's version, sent to the Hub as ``library_version`` (read at call time: the package root imports us)."""
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
    source = str(repo_id)
    local = Path(repo_id).is_dir()
    if local:
        root, files, hub_kwargs = Path(repo_id), _listing(Path(repo_id)), {}
        where = source
    else:
        root, files, offline = _snapshot(source, revision, token=token, cache_dir=cache_dir,
                                         allow_pickle=allow_pickle)
        where = f"{source}@{revision or 'main'}" + (f" (offline: cached commit {root.name})" if offline else "")
        # transformers reads the same commit from the cache (the model keeps the repo id as its name)
        hub_kwargs = {"revision": root.name, "token": token, "cache_dir": cache_dir, "local_files_only": True}

    detected = _detect_form(files, root, where)
    if form is not None and form != detected:
        raise ValueError(f"{where}: asked for form={form!r} but the repo holds the {detected!r} form")
    weights = ("adapter_model",) if detected == "adapter" else ("model",)
    _check_weights(files, weights, where, allow_pickle)

    if detected == "full":
        model = GCLModel.from_pretrained(source, allow_pickle=allow_pickle, **hub_kwargs)
    elif detected == "backbone":
        backbone = load_backbone(source, allow_pickle=allow_pickle, **hub_kwargs)
        model = GCLModel.from_backbone(backbone, **_read_settings(files, root))
    else:
        model = _load_adapter(files, root, where, allow_pickle, token, cache_dir)
    return model.eval()


def check_model_available(name: str | os.PathLike, *, revision: str | None = None, token: str | bool | None = None,
                          cache_dir: str | os.PathLike | None = None) -> None:
    """Raise one error naming ``name`` (and, offline, the Hub cache searched) unless it is a local directory, a
    Hub repo that answers, or, offline, a cached snapshot: the check `load` makes, for code that then loads
    with transformers directly (``gcl-hf train``)."""
    if os.path.isdir(name):
        return
    if _repo_files(str(name), revision, token=token) is None:  # offline or unreachable: it must be cached
        _cached_snapshot(str(name), revision, cache_dir)


def _listing(root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]


def _snapshot(repo_id: str, revision: str | None, *, token: str | bool | None, cache_dir: str | os.PathLike | None,
              allow_pickle: bool) -> tuple[Path, list[str], bool]:
    """``(snapshot directory, the repo's files, offline)``: one commit of ``repo_id@revision`` in the local Hub
    cache, downloaded by ``snapshot_download`` (which records ``revision -> commit`` in the cache's refs, so an
    offline load of the same revision finds it); pickle weights are never downloaded unless allowed. Offline or
    with the Hub unreachable, the cached snapshot (refs resolved as huggingface_hub does)."""
    listed = _repo_files(repo_id, revision, token=token)
    if listed is None:
        snapshot = _cached_snapshot(repo_id, revision, cache_dir)
        return snapshot, _listing(snapshot), True
    ignore = None if allow_pickle else [f"*{suffix}" for suffix in PICKLE_SUFFIXES] + ["*.bin.index.json"]
    snapshot = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                      ignore_patterns=ignore, library_name="gcl-hf",
                                      library_version=library_version()))
    return snapshot, listed, False


def _repo_files(repo_id: str, revision: str | None, *, token: str | bool | None) -> list[str] | None:
    """The files of ``repo_id@revision`` on the Hub (for the form and weight checks), or ``None`` when the Hub is
    offline or unreachable (loading then reads the local Hub cache)."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise FileNotFoundError(f"{repo_id}: no such local directory, and not a Hub repo id ('namespace/name')") \
            from None
    if constants.HF_HUB_OFFLINE:
        return None
    try:
        info = HfApi(token=token, library_name="gcl-hf", library_version=library_version()).model_info(
            repo_id, revision=revision)
    except RepositoryNotFoundError as exc:
        raise type(exc)(f"Repository Not Found: {repo_id} is neither a local directory nor a model repo on the "
                        "Hub that you can see (private or gated: log in with `hf auth login`)",
                        response=exc.response) from exc
    except RevisionNotFoundError as exc:
        raise type(exc)(f"{repo_id}: no revision {revision!r} (branch, tag or commit) on the Hub",
                        response=exc.response) from exc
    except NETWORK_ERRORS as exc:
        logger.warning("the Hub is unreachable (%s); loading %s from the local Hub cache",
                       str(exc).splitlines()[0] if str(exc) else type(exc).__name__, repo_id)
        return None
    return [s.rfilename for s in info.siblings or []]


def _cached_snapshot(repo_id: str, revision: str | None, cache_dir: str | os.PathLike | None) -> Path:
    """The cached snapshot directory of ``repo_id@revision`` (refs resolved as huggingface_hub does)."""
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OfflineModeIsEnabled) as exc:
        raise HubCacheMissError(
            f"{repo_id}@{revision or 'main'}: the Hub is offline (HF_HUB_OFFLINE=1 or unreachable), and this is "
            f"neither a local directory nor in the local Hub cache ({cache_dir or constants.HF_HUB_CACHE}); load it "
            "once online, or pass a local directory"
        ) from exc


def _detect_form(files: list[str], root: Path, where: str) -> str:
    if ADAPTER_CONFIG_FILE in files:
        return "adapter"
    if "config.json" not in files:
        raise ValueError(f"{where}: neither config.json nor {ADAPTER_CONFIG_FILE}: not a published model "
                         f"(files: {sorted(files)})")
    config = json.loads((root / "config.json").read_text(encoding="utf-8"))
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


def _read_settings(files: list[str], root: Path) -> dict[str, Any]:
    return read_settings(str(root / GCL_SETTINGS_FILE)) if GCL_SETTINGS_FILE in files else {}


def _load_adapter(files: list[str], root: Path, where: str, allow_pickle: bool, token: str | bool | None,
                  cache_dir: Any) -> GCLModel:
    """The base model named in ``adapter_config.json``, wrapped with the saved GCL settings, with the adapter
    directory (one snapshot, or the local directory) attached."""
    config_path = root / ADAPTER_CONFIG_FILE
    adapter_config = json.loads(config_path.read_text(encoding="utf-8"))
    base_id = adapter_config.get("base_model_name_or_path")
    if not base_id:
        raise ValueError(f"{where}: {ADAPTER_CONFIG_FILE} has no base_model_name_or_path; cannot load the base model")
    base_revision = adapter_config.get("revision")
    hub_kwargs: dict[str, Any] = {}
    if not Path(base_id).is_dir():
        base_root, base_files, _ = _snapshot(base_id, base_revision, token=token, cache_dir=cache_dir,
                                             allow_pickle=allow_pickle)
        _check_weights(base_files, ("model",), f"base model {base_id}@{base_revision or 'main'}", allow_pickle)
        hub_kwargs = {"revision": base_root.name, "token": token, "cache_dir": cache_dir, "local_files_only": True}
    backbone = load_backbone(base_id, allow_pickle=allow_pickle, **hub_kwargs)
    model = GCLModel.from_backbone(backbone, **_read_settings(files, root))
    return load_adapter(model, config_path.parent, is_trainable=True, name=where, allow_pickle=allow_pickle)


__all__ = ["NETWORK_ERRORS", "PICKLE_SUFFIXES", "HubCacheMissError", "UnsafeWeightsError", "check_model_available",
           "library_version", "load"]
