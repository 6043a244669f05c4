"""Publish GCL models to the Hugging Face Hub with a model card, and load them back anywhere.

Three forms (``form=``):

- ``"full"``: the whole `GCLModel` (``save_pretrained``: config with ``model_type: gcl`` + safetensors);
  ``AutoModel.from_pretrained(repo)`` returns it after ``import gcl_hf``.
- ``"adapter"``: only the backbone's LoRA adapter (peft files) naming its base model, plus
  ``gcl_config.json`` (fusion and loss settings) and ``gcl_extra.safetensors`` (weights outside the adapter:
  the temperature, the ``"mlp"`` fusion head): the adapter directory of :mod:`gcl_hf.adapter`.
- ``"backbone"``: the merged backbone as a plain checkpoint (``model.save_backbone``) that transformers alone
  loads, e.g. ``CLIPModel.from_pretrained(repo)``.

Each push is one commit through huggingface_hub (``create_repo`` + ``create_commit``), with a README.md card
built by :mod:`gcl_hf.model_card`. Tokens come from huggingface_hub (``hf auth login`` / ``HF_TOKEN``) or the
``token`` argument; they are never logged, and a push refuses any file that contains the token.
Loading reads safetensors only (pickle weights are refused unless ``allow_pickle=True``) and never passes
``trust_remote_code``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, HfApi, get_token, hf_hub_download

from .adapter import (ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILES, GCL_EXTRA_WEIGHTS_FILE, GCL_SETTINGS_FILE,
                      load_adapter, read_settings, save_adapter, write_settings)
from .model_card import FORMS, build_model_card, hub_id_or_none
from .modeling_gcl import GCLModel, is_peft_model

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
#: Files a push replaces: stale weights/configs of another form must not survive in the repo.
_REPLACED_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json", "*.pt", "*.pth",
                      "*.ckpt", "*.pkl", "config.json", ADAPTER_CONFIG_FILE, GCL_SETTINGS_FILE)


class UnsafeWeightsError(OSError):
    """A repo offers only pickle weights (``.bin``/``.pt``/...), which can run code when loaded."""


# ---------------------------------------------------------------------------------------------- saving
def save_for_hub(
    model: GCLModel,
    save_directory: str | os.PathLike,
    *,
    repo_id: str,
    form: str = "full",
    processor: Any | None = None,
    base_model: str | None = None,
    base_model_revision: str | None = None,
    eval_results: Any | None = None,
    training_info: Any | None = None,
    license: str | None = None,
    language: str | list[str] | None = None,
    tags: tuple[str, ...] | list[str] = (),
    template_path: str | os.PathLike | None = None,
    max_shard_size: int | str = "50GB",
) -> Path:
    """Write exactly what :func:`publish` uploads for ``form`` into ``save_directory`` (weights, configs,
    processor files, README.md card) and return it. Useful to inspect a push before making it."""
    base_model = check_publishable(model, form, base_model)
    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    if form == "full":
        model.save_pretrained(out, max_shard_size=max_shard_size)
    elif form == "adapter":
        save_adapter(model, out, base_model=base_model, base_model_revision=base_model_revision)
    else:
        model.save_backbone(out, max_shard_size=max_shard_size)
        write_settings(model, out, form=form, base_model=base_model, base_model_revision=base_model_revision)
    if processor is not None:
        processor.save_pretrained(out)
    card = build_model_card(
        model, repo_id=repo_id, form=form, base_model=base_model, base_model_revision=base_model_revision,
        eval_results=eval_results, training_info=training_info, license=license, language=language, tags=tags,
        has_processor=processor is not None, template_path=template_path,
    )
    card.save(out / "README.md")  # after peft's save_pretrained, which writes its own README
    pickles = sorted(p.name for p in out.rglob("*") if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise RuntimeError(f"save_for_hub wrote pickle files {pickles}; gcl-hf publishes safetensors only")
    return out


def check_publishable(model: GCLModel, form: str, base_model: str | None = None) -> str | None:
    """Raise `ValueError` if ``model`` cannot be published as ``form`` without losing something; return the
    base model's Hub id (given, or the backbone's / adapter's name when that is a Hub id)."""
    if form not in FORMS:
        raise ValueError(f"form={form!r}: expected one of {FORMS}")
    name = model._unwrapped_backbone().name_or_path
    if form == "backbone" and model.config.fusion == "mlp":
        raise ValueError(
            "form='backbone' drops the learned 'mlp' fusion head, so fused embeddings would change; "
            "publish form='full' (or 'adapter') instead"
        )
    if form != "adapter":
        return base_model or hub_id_or_none(name)
    if not is_peft_model(model.backbone):
        raise ValueError(
            "form='adapter' needs a backbone with LoRA adapters (model.apply_lora(LoraConfig(...)) or "
            "GCLTrainer(peft_config=...)); this model has none: publish form='full' or 'backbone'"
        )
    peft_name = model.backbone.peft_config["default"].base_model_name_or_path
    base_model = base_model or hub_id_or_none(name) or hub_id_or_none(peft_name)
    if base_model is None:
        raise ValueError(
            "form='adapter' needs the base model's Hub id (the adapter alone is not a model): pass "
            f"base_model='org/name' (the backbone's name_or_path {name!r} is not a Hub id)"
        )
    return base_model


# ---------------------------------------------------------------------------------------------- publishing
def publish(
    model: GCLModel,
    repo_id: str,
    *,
    form: str = "full",
    processor: Any | None = None,
    eval_results: Any | None = None,
    training_info: Any | None = None,
    base_model: str | None = None,
    base_model_revision: str | None = None,
    revision: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    create_pr: bool = False,
    token: str | bool | None = None,
    license: str | None = None,
    language: str | list[str] | None = None,
    tags: tuple[str, ...] | list[str] | None = (),
    template_path: str | os.PathLike | None = None,
    max_shard_size: int | str = "50GB",
) -> CommitInfo:
    """Push ``model`` to ``repo_id`` as ``form`` (``"full"``, ``"adapter"`` or ``"backbone"``) in one commit.

    The repo is created if needed (``private`` applies then); ``revision`` names a branch, created from
    ``main`` if missing. ``eval_results`` is our evaluator's JSON (path or object) and becomes the card's
    ``model-index``. ``token`` defaults to huggingface_hub's (``HF_TOKEN`` or ``hf auth login``). Returns the
    `CommitInfo` (a ``str``: the commit URL; ``.oid`` is the commit sha to pin when loading).
    """
    check_publishable(model, form, base_model)  # fail before touching the Hub
    api = HfApi(token=token, library_name="gcl-hf", library_version=_version())
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision is not None and revision != "main" and not create_pr:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gcl-hf-push-") as tmp:
        folder = save_for_hub(
            model, tmp, repo_id=repo_id, form=form, processor=processor, base_model=base_model,
            base_model_revision=base_model_revision, eval_results=eval_results, training_info=training_info,
            license=license, language=language, tags=tuple(tags or ()), template_path=template_path,
            max_shard_size=max_shard_size,
        )
        _refuse_files_with_token(folder, token)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        added = {p.relative_to(folder).as_posix() for p in files}
        existing = api.list_repo_files(repo_id, revision=None if create_pr else revision)
        operations: list[Any] = [
            CommitOperationDelete(path)
            for path in existing
            if path not in added and any(fnmatch.fnmatch(path, pat) for pat in _REPLACED_PATTERNS)
        ]
        operations += [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
                       for p in files]
        commit = api.create_commit(
            repo_id, operations, revision=revision, create_pr=create_pr,
            commit_message=commit_message or f"Upload GCL model ({form}) with gcl-hf",
            commit_description=commit_description,
        )
    logger.info("published %s form of the model to %s (revision %s): %s", form, repo_id, revision or "main",
                commit.commit_url)
    return commit


def _refuse_files_with_token(folder: Path, token: str | bool | None) -> None:
    secret = token if isinstance(token, str) else (get_token() if token is not False else None)
    if not secret:
        return
    needle = secret.encode()
    for path in folder.rglob("*"):
        if path.is_file() and needle in path.read_bytes():
            raise RuntimeError(
                f"refusing to upload {path.relative_to(folder).as_posix()}: it contains your Hub token "
                "(check training_info / config values)"
            )


def _version() -> str:
    from . import __version__

    return __version__


# ---------------------------------------------------------------------------------------------- loading
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
    use_safetensors = None if allow_pickle else True

    if detected == "full":
        model = GCLModel.from_pretrained(source, use_safetensors=use_safetensors, **hub_kwargs)
    elif detected == "backbone":
        from transformers import AutoModel

        backbone = AutoModel.from_pretrained(source, use_safetensors=use_safetensors, **hub_kwargs)
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
    from transformers import AutoModel

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
    backbone = AutoModel.from_pretrained(base_id, revision=base_revision, token=token, cache_dir=cache_dir,
                                         use_safetensors=None if allow_pickle else True)
    model = GCLModel.from_backbone(backbone, **_read_settings(files, fetch))
    return load_adapter(model, config_path.parent, is_trainable=True, name=where)


# ---------------------------------------------------------------------------------------------- CLI
def add_push_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``gcl-hf push`` (no token flag on purpose: use ``hf auth login`` or ``HF_TOKEN``)."""
    parser.add_argument("model_dir", help="a saved GCLModel directory (save_pretrained / trainer output)")
    parser.add_argument("repo_id", help="target Hub repo, e.g. your-name/gcl-clip-vit-b32")
    parser.add_argument("--form", choices=FORMS, default="full",
                        help="full GCLModel, LoRA adapter only, or the merged backbone as a plain checkpoint")
    parser.add_argument("--eval-results", help="JSON written by the gcl-hf evaluator; becomes model-index")
    parser.add_argument("--training-info", help="JSON object: datasets, data_description, hyperparameters")
    parser.add_argument("--base-model", help="Hub id of the base model (required for --form adapter when the "
                                             "backbone's name is not a Hub id)")
    parser.add_argument("--base-model-revision", help="revision (commit sha) of the base model")
    parser.add_argument("--revision", help="branch to push to (created from main if missing)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--commit-message", help="commit message")
    parser.add_argument("--license", help="license id for the card, e.g. apache-2.0 or mit")
    parser.add_argument("--tag", action="append", default=[], help="extra card tag (repeatable)")
    parser.add_argument("--card-template", help="a custom Jinja2 card template (default: the packaged one, "
                                                "model_cards/gcl_model_card.md.j2)")
    parser.add_argument("--allow-pickle", action="store_true", help="allow loading pickle weights from model_dir")
    return parser


def run_push(args: argparse.Namespace) -> CommitInfo:
    """Run ``gcl-hf push``: load ``model_dir`` (and its processor, if saved there) and :func:`publish` it."""
    model = load(args.model_dir, allow_pickle=args.allow_pickle)
    processor = _local_processor(Path(args.model_dir))
    training_info = json.loads(Path(args.training_info).read_text(encoding="utf-8")) if args.training_info else None
    commit = publish(
        model, args.repo_id, form=args.form, processor=processor, eval_results=args.eval_results,
        training_info=training_info, base_model=args.base_model, base_model_revision=args.base_model_revision,
        revision=args.revision, private=args.private or None, commit_message=args.commit_message,
        license=args.license, tags=args.tag, template_path=args.card_template,
    )
    print(f"pushed {args.form} form to {commit.commit_url} (commit {commit.oid})")
    return commit


def _local_processor(model_dir: Path) -> Any | None:
    if not any((model_dir / f).exists() for f in ("processor_config.json", "preprocessor_config.json",
                                                   "tokenizer_config.json")):
        return None
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(model_dir)


def main(argv: list[str] | None = None) -> int:
    """``python -m gcl_hf.hub`` = ``gcl-hf push``."""
    parser = add_push_arguments(argparse.ArgumentParser(prog="gcl-hf push", description=__doc__.splitlines()[0]))
    run_push(parser.parse_args(argv))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


__all__ = ["UnsafeWeightsError", "add_push_arguments", "check_publishable", "load", "main", "publish", "run_push",
           "save_for_hub"]
