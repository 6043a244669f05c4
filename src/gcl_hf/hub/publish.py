"""Publish GCL models to the Hugging Face Hub with a model card (`gcl_hf.hub.loading` loads them back).

Three forms (``form=``):

- ``"full"``: the whole `GCLModel` (``save_pretrained``: config with ``model_type: gcl`` + safetensors);
  ``AutoModel.from_pretrained(repo)`` returns it after ``import gcl_hf``.
- ``"adapter"``: only the backbone's LoRA adapter (peft files) naming its base model, plus
  ``gcl_config.json`` (fusion and loss settings) and ``gcl_extra.safetensors`` (weights outside the adapter:
  the temperature, the ``"mlp"`` fusion head): the adapter directory of :mod:`gcl_hf.hub.adapter`.
- ``"backbone"``: the merged backbone as a plain checkpoint (``model.save_backbone``) that transformers alone
  loads, e.g. ``CLIPModel.from_pretrained(repo)``.

Each push is one commit through huggingface_hub (``create_repo`` + ``create_commit``), with a README.md card
built by :mod:`gcl_hf.hub.card`. Tokens come from huggingface_hub (``hf auth login`` / ``HF_TOKEN``) or the
``token`` argument; they are never logged, and a push refuses any file (or commit message) that contains the
token before it creates the repo, so a refused push leaves nothing on the Hub.
Loading reads safetensors only (pickle weights are refused unless ``allow_pickle=True``) and never passes
``trust_remote_code``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import (
    CommitInfo,
    HfApi,
    get_token,
)
from huggingface_hub.errors import LocalTokenNotFoundError

from gcl_hf.hub.adapter import (
    ADAPTER_CONFIG_FILE,
    GCL_SETTINGS_FILE,
    save_adapter,
    write_settings,
)
from gcl_hf.hub.card import FORMS, build_model_card, hub_id_or_none
from gcl_hf.hub.loading import NETWORK_ERRORS, PICKLE_SUFFIXES, library_version
from gcl_hf.modeling.backbone import is_peft_model
from gcl_hf.modeling.model import GCLModel

logger = logging.getLogger(__name__)

#: Files a push replaces: stale weights/configs of another form must not survive in the repo.
_REPLACED_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json", "*.pt", "*.pth",
                      "*.ckpt", "*.pkl", "config.json", ADAPTER_CONFIG_FILE, GCL_SETTINGS_FILE,
                      # [usage] sentence-transformers files of another form
                      "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "1_Normalize/*")


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
    processor = processor if processor is not None else model.processor  # [usage] the attached processor
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
    secret = _secret(token)
    if secret is None:
        raise LocalTokenNotFoundError("no Hugging Face token: run `hf auth login` or set HF_TOKEN (a write token)")
    _refuse_text_with_token({"commit_message": commit_message, "commit_description": commit_description}, secret)
    api = HfApi(token=token, library_name="gcl-hf", library_version=library_version())
    try:
        user = api.whoami()  # the Hub reachable and the token valid, before anything is built
    except NETWORK_ERRORS as exc:
        raise ConnectionError(f"cannot push to {repo_id}: the Hub ({api.endpoint}) is not reachable "
                              f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
    if "/" not in repo_id:  # the Hub puts a bare name under the token's owner; the card needs the full id
        repo_id = f"{user['name']}/{repo_id}"
    with tempfile.TemporaryDirectory(prefix="gcl-hf-push-") as tmp:
        folder = save_for_hub(
            model, tmp, repo_id=repo_id, form=form, processor=processor, base_model=base_model,
            base_model_revision=base_model_revision, eval_results=eval_results, training_info=training_info,
            license=license, language=language, tags=tuple(tags or ()), template_path=template_path,
            max_shard_size=max_shard_size,
        )
        _refuse_files_with_token(folder, secret)  # before the repo exists: a refused push leaves no trace
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if revision is not None and revision != "main" and not create_pr:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        # one commit: the new files, and the stale weights/adapter files of another form deleted (a file that is
        # uploaded again is not deleted: huggingface_hub drops those deletions itself)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=folder, revision=revision, create_pr=create_pr,
            commit_message=commit_message or f"Upload GCL model ({form}) with gcl-hf",
            commit_description=commit_description, delete_patterns=list(_REPLACED_PATTERNS),
        )
    logger.info("published %s form of the model to %s (revision %s): %s", form, repo_id, revision or "main",
                commit.commit_url)
    return commit


def _secret(token: str | bool | None) -> str | None:
    """The token a push will send (given, or huggingface_hub's own), to keep it out of everything else."""
    return token if isinstance(token, str) else (get_token() if token is not False else None)


def _refuse_text_with_token(texts: dict[str, str | None], secret: str | None) -> None:
    for name, text in texts.items():
        if secret and text and secret in text:
            raise RuntimeError(f"refusing to push: {name} contains your Hub token")


def _refuse_files_with_token(folder: Path, secret: str | None) -> None:
    if not secret:
        return
    needle = secret.encode()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and (needle in path.read_bytes() or secret in path.name):
            raise RuntimeError(
                f"refusing to upload {path.relative_to(folder).as_posix()}: it contains your Hub token "
                "(check training_info / config values); nothing was sent to the Hub"
            )


__all__ = ["check_publishable", "publish", "save_for_hub"]
