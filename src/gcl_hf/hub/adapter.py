"""The GCL adapter directory: a LoRA-trained `GCLModel` saved as what training changed, loadable on its base model.

One directory holds:

- peft's files, ``adapter_config.json`` (naming the base model) and ``adapter_model.safetensors``, which peft
  alone loads onto the plain backbone;
- ``gcl_extra.safetensors``: the weights outside the LoRA adapters, under `GCLModel` state-dict names: every
  weight of the model outside the backbone (own temperature / logit bias, the ``"mlp"`` fusion head) and the
  backbone's own ``logit_scale`` / ``logit_bias`` as ``backbone.logit_scale`` / ``backbone.logit_bias``
  (trainable under LoRA, yet not in peft's file);
- ``gcl_config.json``: the GCL settings (fusion, loss pairs and weights, negatives, objective, ...) that rebuild
  the wrapper with ``GCLModel.from_backbone(base, **settings)``, with the gcl-hf version and base model.

`GCLTrainer.save_adapter` and the ``"adapter"`` form of `gcl_hf.hub` write this format with `save_adapter`;
`load_adapter` (and `gcl_hf.hub.load`, which downloads the files from one pinned commit first) read it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from gcl_hf.modeling.backbone import is_peft_model
from gcl_hf.modeling.configuration import LOSS_FIELDS
from gcl_hf.modeling.loading import UnsafeWeightsError
from gcl_hf.modeling.model import GCLModel

__all__ = ["ADAPTER_CONFIG_FILE", "ADAPTER_WEIGHTS_FILES", "GCL_EXTRA_WEIGHTS_FILE", "GCL_SETTINGS",
           "GCL_SETTINGS_FILE", "extra_state", "load_adapter", "portable_model_path", "read_settings", "save_adapter", "write_settings"]

ADAPTER_CONFIG_FILE = "adapter_config.json"
#: peft's adapter weights, safetensors first (the ``.bin`` form is only read with ``allow_pickle``).
ADAPTER_WEIGHTS_FILES = ("adapter_model.safetensors", "adapter_model.bin")
GCL_SETTINGS_FILE = "gcl_config.json"
GCL_EXTRA_WEIGHTS_FILE = "gcl_extra.safetensors"
#: GCLConfig fields that `GCLModel.from_backbone` takes as overrides (saved for the adapter/backbone forms).
GCL_SETTINGS = ("fusion", "fusion_hidden_size", "pairs", "pair_weights", "negatives", "objective",
                "logit_scale_init", "logit_bias_init")
#: Settings a loaded adapter sets on the model it is attached to (they only change the loss).
_BACKBONE_EXTRAS = ("logit_scale", "logit_bias")


# ---------------------------------------------------------------------------------------------- saving
def save_adapter(
    model: GCLModel,
    directory: str | os.PathLike,
    *,
    base_model: str | None = None,
    base_model_revision: str | None = None,
) -> Path:
    """Write ``model``'s LoRA adapter, its other weights and its GCL settings to ``directory`` (created if
    needed) and return it. ``base_model`` (a Hub id or path) and ``base_model_revision`` replace the base model
    peft records in ``adapter_config.json`` (default: the backbone's ``name_or_path``)."""
    if not is_peft_model(model.backbone):
        raise ValueError("save_adapter: the model has no LoRA adapters (apply_lora first, or use save_pretrained)")
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    model.backbone.save_pretrained(str(out), safe_serialization=True)
    config_path = out / ADAPTER_CONFIG_FILE
    recorded = model.backbone.peft_config["default"].base_model_name_or_path or None
    explicit = base_model is not None
    base_model = portable_model_path(base_model if explicit else recorded)
    if explicit or base_model != recorded:
        adapter_config = json.loads(config_path.read_text(encoding="utf-8"))
        adapter_config["base_model_name_or_path"] = base_model
        if explicit:
            adapter_config["revision"] = base_model_revision
        config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    extra = extra_state(model)
    if extra:
        save_file(extra, str(out / GCL_EXTRA_WEIGHTS_FILE), metadata={"format": "pt"})
    write_settings(model, out, form="adapter", base_model=base_model, base_model_revision=base_model_revision)
    return out


def portable_model_path(name: str | None) -> str | None:
    """A model name that means the same from any working directory: a relative path to a local directory
    becomes absolute; a Hub id (or an absolute path, or ``None``) is kept."""
    if name and not os.path.isabs(name) and os.path.isdir(name):
        return os.path.abspath(name)
    return name


def extra_state(model: GCLModel) -> dict[str, torch.Tensor]:
    """Weights an adapter directory carries besides the LoRA tensors: everything outside the backbone (fusion
    head, own temperature/bias) and the backbone's own ``logit_scale``/``logit_bias`` (trainable under LoRA)."""
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    base = model._unwrapped_backbone()
    for name in _BACKBONE_EXTRAS:
        param = getattr(base, name, None)
        if isinstance(param, torch.nn.Parameter):
            state[f"backbone.{name}"] = param.detach().contiguous().clone()
    return state


def write_settings(
    model: GCLModel,
    directory: str | os.PathLike,
    *,
    form: str,
    base_model: str | None,
    base_model_revision: str | None,
) -> None:
    """Write ``gcl_config.json``: the GCL settings of ``model`` (`GCL_SETTINGS`), the published ``form``, the
    base model and the gcl-hf version."""
    from gcl_hf import __version__

    config = model.config
    payload = {"gcl_hf_version": __version__, "form": form, "base_model": base_model,
               "base_model_revision": base_model_revision,
               "backbone_model_type": config.backbone_config.model_type,
               "settings": {k: getattr(config, k) for k in GCL_SETTINGS}}
    path = Path(directory) / GCL_SETTINGS_FILE
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_settings(path: str | os.PathLike) -> dict[str, Any]:
    """The GCL settings (``GCLModel.from_backbone`` overrides) of a ``gcl_config.json``."""
    return json.loads(Path(path).read_text(encoding="utf-8")).get("settings", {})


# ---------------------------------------------------------------------------------------------- loading
def load_adapter(
    model: GCLModel,
    directory: str | os.PathLike,
    *,
    is_trainable: bool = False,
    name: str | None = None,
    allow_pickle: bool = False,
) -> GCLModel:
    """Attach a `save_adapter` directory to ``model`` (a `GCLModel` over the same base backbone, without LoRA):
    the loss settings of ``gcl_config.json``, the LoRA adapters, then the weights of ``gcl_extra.safetensors``.
    With ``is_trainable`` the adapters and the temperature stay trainable. ``name`` is how errors refer to the
    adapter (default: the directory). peft's pickle form ``adapter_model.bin`` (used by peft when there is no
    safetensors file) raises `UnsafeWeightsError` unless ``allow_pickle=True``. Returns ``model``."""
    from peft import PeftConfig
    from peft.utils import load_peft_weights, set_peft_model_state_dict
    from safetensors.torch import load_file

    directory = Path(directory)
    where = name or str(directory)
    if is_peft_model(model.backbone):
        raise ValueError("load_adapter: the model already carries LoRA adapters")
    if not (directory / ADAPTER_CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{where}: no {ADAPTER_CONFIG_FILE} (not an adapter directory)")
    safe, pickled = ((directory / f).is_file() for f in ADAPTER_WEIGHTS_FILES)
    if pickled and not safe and not allow_pickle:
        raise UnsafeWeightsError(
            f"{where}: adapter weights only as {ADAPTER_WEIGHTS_FILES[1]} (a pickle, which can run code when "
            f"loaded); convert them to {ADAPTER_WEIGHTS_FILES[0]}, or pass allow_pickle=True if you trust them"
        )
    settings_path = directory / GCL_SETTINGS_FILE
    if settings_path.is_file():
        settings = read_settings(settings_path)
        if settings.get("fusion", model.config.fusion) != model.config.fusion:
            raise ValueError(f"{where}/{GCL_SETTINGS_FILE}: adapter trained with fusion={settings['fusion']!r}, "
                             f"the model has fusion={model.config.fusion!r}")
        model.config.update_loss_settings(**{k: settings[k] for k in LOSS_FIELDS if k in settings})

    lora_config = PeftConfig.from_pretrained(str(directory))
    lora_config.inference_mode = not is_trainable
    model.apply_lora(lora_config, train_logit_scale=is_trainable)
    result = set_peft_model_state_dict(model.backbone, load_peft_weights(str(directory), device="cpu"))
    missing_lora = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing_lora:
        base = lora_config.base_model_name_or_path
        raise ValueError(f"{where}: adapter weights do not fit the base model {base}: unexpected "
                         f"{result.unexpected_keys[:5]}, missing {missing_lora[:5]}")
    extra_path = directory / GCL_EXTRA_WEIGHTS_FILE
    if extra_path.is_file():
        _load_extra_state(model, load_file(str(extra_path)), where)
    return model


def _load_extra_state(model: GCLModel, extra: dict[str, torch.Tensor], where: str) -> None:
    base = model._unwrapped_backbone()
    own = {k: v for k, v in extra.items() if not k.startswith("backbone.")}
    for key, value in extra.items():
        if key.startswith("backbone."):
            param = getattr(base, key[len("backbone."):], None)
            if not isinstance(param, torch.nn.Parameter) or param.shape != value.shape:
                raise ValueError(f"{where}: {GCL_EXTRA_WEIGHTS_FILE} holds {key} {tuple(value.shape)}, which the "
                                 "base model does not have")
            with torch.no_grad():
                param.copy_(value)
    expected = {k for k in model.state_dict() if not k.startswith("backbone.")}
    if set(own) != expected:
        raise ValueError(f"{where}: {GCL_EXTRA_WEIGHTS_FILE} holds {sorted(own)}, the model expects {sorted(expected)} "
                         f"(does {GCL_SETTINGS_FILE} match?)")
    model.load_state_dict(own, strict=False)
