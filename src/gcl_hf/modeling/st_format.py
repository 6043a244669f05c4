"""The sentence-transformers files saved beside a model, so ``SentenceTransformer(path)`` loads it with ST's own
modules only.

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
  ``trust_remote_code=True``, so fused dicts are refused by ST; :func:`gcl_hf.integrations.sentence_transformers.encode_fused` computes them (score
  fusion) from the same loaded model.

Nothing here needs sentence-transformers at save time: the files are plain JSON.
"""

from __future__ import annotations

import json
import logging
import os
import typing
from pathlib import Path
from typing import Any

__all__ = ["SENTENCE_TRANSFORMERS_FORMS", "sentence_transformers_files", "write_sentence_transformers_files"]

#: Published forms that sentence-transformers loads (the LoRA adapter alone is not a model).
SENTENCE_TRANSFORMERS_FORMS = ("full", "backbone")
_TRANSFORMER = "sentence_transformers.base.modules.transformer.Transformer"
_NORMALIZE = "sentence_transformers.base.modules.normalize.Normalize"
_NORMALIZE_DIR = "1_Normalize"
#: files that hold a tokenizer's vocabulary (one of them must sit beside a model ST or gcl-hf loads)
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "spiece.model", "tokenizer.model",
                   "sentencepiece.bpe.model")
logger = logging.getLogger(__name__)


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
    if not any((Path(directory) / name).is_file() for name in TOKENIZER_FILES):
        logger.warning("%s: saved without a tokenizer (no %s): sentence-transformers would load an empty vocabulary "
                       "and gcl-hf refuses it; save the processor there too (processor.save_pretrained(%r), or attach "
                       "it: model.processor = processor)", directory, ", ".join(TOKENIZER_FILES[:3]), str(directory))
    return written
