"""sentence-transformers: saved GCL models load with ``SentenceTransformer(path)``, using ST's own modules only.

``GCLModel.save_pretrained`` and ``GCLModel.save_backbone`` (hence ``save_for_hub`` / ``push_to_hub`` in every
form but ``"adapter"``) write ``modules.json``, ``sentence_bert_config.json`` and
``config_sentence_transformers.json`` beside the weights:

* **full form** (``save_pretrained``): one ST ``Transformer`` module whose ``modality_config`` calls the
  model's own ``encode_text`` / ``encode_image`` / ``encode_fused``, so texts, images and
  ``{"image": ..., "text": ...}`` dicts give exactly ``GCLModel.encode``'s vectors, for every fusion.
  transformers only knows the ``gcl`` model type after ``import gcl_hf``; the ST config declares gcl-hf as a
  requirement, so ST names the missing package.
* **backbone form** (``save_backbone``): ST ``Transformer`` (``get_text_features`` / ``get_image_features``)
  then ``Normalize``: plain sentence-transformers, no gcl-hf needed, texts and images only. No ST module adds
  two tower outputs, and ST (>= 6.0) imports module classes from outside its own package only with
  ``trust_remote_code=True``, so fused dicts are refused by ST; :func:`encode_fused` computes them (score
  fusion) from the same loaded model.

Nothing here needs sentence-transformers at save time: the files are plain JSON.
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["SENTENCE_TRANSFORMERS_FORMS", "encode_fused", "sentence_transformers_files",
           "write_sentence_transformers_files"]

#: Published forms that sentence-transformers loads (the LoRA adapter alone is not a model).
SENTENCE_TRANSFORMERS_FORMS = ("full", "backbone")
_TRANSFORMER = "sentence_transformers.base.modules.transformer.Transformer"
_NORMALIZE = "sentence_transformers.base.modules.normalize.Normalize"
_NORMALIZE_DIR = "1_Normalize"


def _output_name(method: Any) -> str | None:
    """``"pooler_output"`` when ``method`` returns a ``ModelOutput`` with that field (transformers 5), else
    ``None`` (a plain tensor), as ST reads it."""
    from dataclasses import fields

    from transformers.utils import ModelOutput

    try:
        annotation = typing.get_type_hints(method).get("return")
    except Exception:  # noqa: BLE001 - unresolvable annotations: assume the transformers 5 output object
        return "pooler_output"
    stack = [annotation]
    while stack:
        current = stack.pop()
        if isinstance(current, type) and issubclass(current, ModelOutput):
            return "pooler_output" if "pooler_output" in {f.name for f in fields(current)} else None
        stack.extend(typing.get_args(current))
    return None


def _text_processing(model: Any) -> dict[str, Any]:
    """The tokenizer call ``GCLModel.encode`` makes: same truncation length and padding policy."""
    from gcl_hf.data.collator import GCLCollator

    collator = GCLCollator.for_model(model, model.processor)
    return {"max_length": collator.max_length, "padding": collator.padding}


def sentence_transformers_files(model: Any, *, form: str = "full") -> dict[str, Any]:
    """The ST files (relative path → JSON object) that make ``model`` saved as ``form`` load in ST."""
    from gcl_hf import __version__

    if form not in SENTENCE_TRANSFORMERS_FORMS:
        raise ValueError(f"form={form!r}: sentence-transformers loads the forms {SENTENCE_TRANSFORMERS_FORMS}")
    import torch
    import transformers

    if form == "full":
        modality_config = {
            "text": {"method": "encode_text", "method_output_name": None},
            "image": {"method": "encode_image", "method_output_name": None},
            "image+text": {"method": "encode_fused", "method_output_name": None},
        }
        modules = [{"idx": 0, "name": "0", "path": "", "type": _TRANSFORMER}]
    else:
        backbone = type(model._unwrapped_backbone())
        modality_config = {
            "text": {"method": "get_text_features", "method_output_name": _output_name(backbone.get_text_features)},
            "image": {"method": "get_image_features",
                      "method_output_name": _output_name(backbone.get_image_features)},
        }
        modules = [{"idx": 0, "name": "0", "path": "", "type": _TRANSFORMER},
                   {"idx": 1, "name": "1", "path": _NORMALIZE_DIR, "type": _NORMALIZE}]
    st_config: dict[str, Any] = {
        "__version__": {"gcl_hf": __version__, "transformers": transformers.__version__,
                        "pytorch": torch.__version__},
        "model_type": "SentenceTransformer",
        "prompts": {"query": "", "document": ""},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    }
    if form == "full":
        st_config["requirements"] = {"gcl-hf": {
            "specifier": f">={__version__}",
            "reason": "the 'gcl' model type: pip install gcl-hf, then `import gcl_hf` before loading"}}
    files: dict[str, Any] = {
        "modules.json": modules,
        "sentence_bert_config.json": {
            "transformer_task": "feature-extraction",
            "modality_config": modality_config,
            "module_output_name": "sentence_embedding",
            "processing_kwargs": {"text": _text_processing(model)},
        },
        "config_sentence_transformers.json": st_config,
    }
    if form == "backbone":
        files[f"{_NORMALIZE_DIR}/config.json"] = {"module_input_name": "sentence_embedding",
                                                  "module_output_name": "sentence_embedding"}
    return files


def write_sentence_transformers_files(model: Any, directory: str | os.PathLike, *, form: str = "full") -> list[Path]:
    """Write :func:`sentence_transformers_files` into ``directory``; returns the paths written."""
    written = []
    for name, payload in sentence_transformers_files(model, form=form).items():
        path = Path(directory) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


def encode_fused(
    model: Any,
    items: Sequence[dict[str, Any] | tuple[Any, str]],
    *,
    fusion: str = "sum",
    batch_size: int = 32,
    convert_to_numpy: bool = True,
) -> Any:
    """Fused (image + text) embeddings from a ``SentenceTransformer``: ``model.encode`` of the dicts when the
    model takes them (the full form), else the ``fusion`` of its raw image and text outputs (the backbone form:
    ``"sum"`` = ``normalize(image_features + text_features)``, ``"mean"`` = mean of the normalised ones)."""
    import torch
    import torch.nn.functional as F
    from sentence_transformers.util import batch_to_device

    pairs = []
    for i, item in enumerate(items):
        image, text = (item.get("image"), item.get("text")) if isinstance(item, dict) else item
        if image is None or not isinstance(text, str):
            raise ValueError(f"items[{i}]: expected {{'image': ..., 'text': str}} or (image, text)")
        pairs.append((image, text))
    if model.supports(("image", "text")):
        return model.encode([{"image": im, "text": tx} for im, tx in pairs], batch_size=batch_size,
                            convert_to_numpy=convert_to_numpy, convert_to_tensor=not convert_to_numpy)
    if fusion not in ("sum", "mean"):
        raise ValueError(f"fusion={fusion!r}: a plain backbone fuses with 'sum' or 'mean' (the 'mlp' head is only "
                         "in the full form)")
    tower = model[0]
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            raw = []
            for inputs in ([im for im, _ in chunk], [tx for _, tx in chunk]):
                features = batch_to_device(model.preprocess(inputs), model.device)
                raw.append(tower(features)[tower.module_output_name])
            image, text = raw
            if fusion == "mean":
                image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
            chunks.append(F.normalize(image + text, dim=-1).float().cpu())
    out = torch.cat(chunks) if chunks else torch.empty(0, model.get_embedding_dimension())
    return out.numpy() if convert_to_numpy else out
