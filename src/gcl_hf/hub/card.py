"""Model cards for published GCL models: Hub metadata (tags, base model, library, `model-index`) and a body
rendered from the packaged Jinja template (``gcl_hf/hub/templates/model_card.md.j2``, linked from ``model_cards/``).

Evaluation results come from our evaluator's JSON (read by :mod:`gcl_hf.hub.eval_results`)
and become ``model-index`` entries, which the Hub renders on the model page.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from gcl_hf.hub.eval_results import eval_results_from_json
from gcl_hf.modeling.st_format import SENTENCE_TRANSFORMERS_FORMS

FORMS = ("full", "adapter", "backbone")
#: Tags every GCL card carries (the Hub filters on them).
BASE_TAGS = ("gcl", "gcl-hf", "multimodal-retrieval", "image-text-retrieval", "contrastive-learning")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
#: Keys never copied from training info into a card (credentials, whatever their container calls them).
_SECRET_KEY = re.compile(r"(^|_)(token|secret|password|passwd|api_key|apikey|auth|credentials?)($|_)", re.IGNORECASE)
#: TrainingArguments fields worth a line in the card (the full object has ~150).
_TRAINING_ARG_FIELDS = (
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "weight_decay", "warmup_ratio", "warmup_steps", "lr_scheduler_type", "optim", "seed", "bf16", "fp16",
    "gradient_checkpointing",
)
#: `GCLTrainingArguments` fields, shown when set to something other than their default. The loss settings
#: actually used are the model's `GCLConfig` (the card's "GCL settings"); these rows record what was asked.
_GCL_ARG_FIELDS = ("pairs", "pair_weights", "negatives", "objective", "fusion", "gradient_cache_chunk_size",
                   "train_logit_scale", "freeze_vision", "freeze_text")
_LORA_FIELDS = ("r", "lora_alpha", "lora_dropout", "target_modules", "bias", "use_rslora", "use_dora",
                "modules_to_save")


def default_template_path() -> Path:
    """The card template shipped inside the package (works from an installed wheel, not only a checkout)."""
    return Path(str(resources.files("gcl_hf").joinpath("hub/templates/model_card.md.j2")))


# ---------------------------------------------------------------------------------------------- the card
def build_model_card(
    model: Any,
    *,
    repo_id: str,
    form: str = "full",
    base_model: str | None = None,
    base_model_revision: str | None = None,
    eval_results: str | os.PathLike | Mapping | Sequence | None = None,
    training_info: Mapping[str, Any] | Any | None = None,
    license: str | None = None,
    language: str | list[str] | None = None,
    tags: Sequence[str] = (),
    has_processor: bool = False,
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """Render the model card of ``model`` published as ``form`` to ``repo_id``.

    ``training_info`` is a mapping (or a `TrainingArguments`): ``datasets`` (Hub dataset ids),
    ``data_description`` (free text), ``lora`` (a LoRA config dict, for models merged before publishing) and any
    scalar hyperparameters; keys that look like credentials are dropped. ``base_model`` defaults to the
    backbone's ``name_or_path`` when that is a Hub id.
    """
    from gcl_hf import __version__

    if form not in FORMS:
        raise ValueError(f"form={form!r}: expected one of {FORMS}")
    config = model.config
    backbone = model._unwrapped_backbone()
    base_model = base_model or hub_id_or_none(getattr(backbone, "name_or_path", None))
    info_training = _training_mapping(training_info, model)
    datasets = info_training.pop("datasets", None)
    datasets = [datasets] if isinstance(datasets, str) else list(datasets or [])
    data_description = info_training.pop("data_description", None)
    lora = info_training.pop("lora", None)
    lora = config.lora_config or lora
    results = eval_results_from_json(eval_results) if eval_results is not None else None
    model_name = repo_id.split("/")[-1]

    backbone_type = getattr(backbone.config, "model_type", "unknown")
    # sentence-transformers loads the saved full and backbone forms, given the processor files beside them
    st_ready = form in SENTENCE_TRANSFORMERS_FORMS and has_processor
    card_tags = list(dict.fromkeys([*BASE_TAGS, backbone_type, *(["lora", "peft"] if form == "adapter" else []),
                                    *(["transformers"] if form != "adapter" else []),
                                    *(["sentence-transformers"] if st_ready else []), *tags]))
    card_data = ModelCardData(
        base_model=base_model,
        datasets=datasets or None,
        eval_results=results,
        language=language,
        library_name={"full": "gcl-hf", "adapter": "peft", "backbone": "transformers"}[form],
        license=license,
        model_name=model_name,
        pipeline_tag="zero-shot-image-classification" if form == "backbone" else "feature-extraction",
        tags=card_tags,
        base_model_relation=("adapter" if form == "adapter" else "finetune") if base_model else None,
    )
    info = {
        "title": f"{model_name}: a GCL-trained {type(backbone).__name__}",
        "summary": _summary(form, type(backbone).__name__, base_model),
        "gcl_hf_version": __version__,
        "form_description": _FORM_DESCRIPTIONS[form].format(cls=type(backbone).__name__),
        "base_model": base_model,
        "base_model_revision": base_model_revision,
        "backbone_class": type(backbone).__name__,
        "backbone_type": backbone_type,
        "embedding_dim": getattr(model, "embedding_dim", "?"),
        "num_parameters": _count(model, form),
        "datasets": datasets,
        "data_description": data_description,
        "hyperparameters": [(k, _cell(v)) for k, v in info_training.items()],
        "gcl": {
            "fusion": config.fusion,
            "pairs_text": ", ".join(f"{a} → {b}" for a, b in config.pair_tuples),
            "pair_weights_text": ", ".join(str(w) for w in config.pair_weights) if config.pair_weights else "equal",
            "negatives": _NEGATIVES_DESCRIPTIONS[config.loss_settings.negatives],
            "objective": config.objective,
        },
        "fusion_description": _FUSION_DESCRIPTIONS[config.fusion],
        "lora": [(k, _cell(lora[k])) for k in _LORA_FIELDS if lora.get(k) not in (None, False)] if lora else [],
        "lora_note": (_LORA_NOTES["backbone" if form == "full" and not config.lora_config else form]
                      .format(base=base_model or "the base model")) if lora else "",
        "load_snippet": _load_snippet(form, repo_id, type(backbone).__name__, base_model, base_model_revision,
                                      has_processor),
        "fusion_snippet": _FUSION_SNIPPETS.get(config.fusion, "") if form != "full" else "",
        "st_form": form if st_ready else None,  # the template's sentence-transformers section
        "repo_id": repo_id,
        "eval_rows": [
            {"task": r.dataset_config, "dataset": r.dataset_name, "split": r.dataset_split or "—",
             "metric": r.metric_name, "value": f"{r.metric_value:.4f}"}
            for r in (results or [])
        ],
    }
    path = Path(template_path) if template_path is not None else default_template_path()
    return ModelCard.from_template(card_data, template_path=str(path), info=info)


#: Files a saved processor leaves in a directory (any one of them means the directory holds one).
_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")


def render_training_card(
    model: Any,
    args: Any,
    *,
    output_dir: str | os.PathLike,
    processor: Any | None = None,
    eval_results: str | os.PathLike | Mapping | Sequence | None = None,
    datasets: str | Sequence[str] | None = None,
    data_description: str | None = None,
    **card_kwargs: Any,
) -> ModelCard:
    """Write ``README.md`` (the GCL card of ``model`` trained with ``args``) into ``output_dir`` and return it.

    What ``GCLTrainer.create_model_card`` calls: the card is for the full form saved in ``output_dir``; its repo
    id is ``args.hub_model_id`` or the directory's name. The GCL settings come from ``model.config`` (what the
    loss used); the training rows from ``args`` (``TrainingArguments`` fields, the GCL fields set away from
    their defaults, the LoRA shortcuts). ``card_kwargs`` go to :func:`build_model_card` (``base_model``,
    ``license``, ``language``, ``tags``, ``template_path``).
    """
    out = Path(output_dir)
    info = _training_mapping(args, model)
    if datasets:
        info["datasets"] = datasets
    if data_description:
        info["data_description"] = data_description
    has_processor = (processor is not None or getattr(model, "processor", None) is not None
                     or any((out / name).is_file() for name in _PROCESSOR_FILES))
    card = build_model_card(model, repo_id=getattr(args, "hub_model_id", None) or out.resolve().name, form="full",
                            eval_results=eval_results, training_info=info, has_processor=has_processor,
                            **card_kwargs)
    out.mkdir(parents=True, exist_ok=True)
    card.save(out / "README.md")
    return card


def hub_id_or_none(name: str | None) -> str | None:
    """``name`` when it looks like a Hub repo id rather than a local path or nothing."""
    if not name or os.path.exists(name) or not _HUB_ID.match(name):
        return None
    return name


def _training_mapping(training_info: Any, model: Any = None) -> dict[str, Any]:
    if training_info is None:
        return {}
    if hasattr(training_info, "to_dict") and not isinstance(training_info, Mapping):
        items = _training_args_mapping(training_info, model)
    elif isinstance(training_info, Mapping):
        items = dict(training_info)
    else:
        raise TypeError(f"training_info: expected a mapping or TrainingArguments, got {type(training_info).__name__}")
    return {str(k): v for k, v in items.items() if not _SECRET_KEY.search(str(k))}


def _training_args_mapping(args: Any, model: Any = None) -> dict[str, Any]:
    """Card rows of a `TrainingArguments` / `GCLTrainingArguments`; the ``lora_*`` shortcuts become ``"lora"``:
    the LoRA config they give ``model`` (``GCLTrainingArguments.lora_config``, the one the trainer applies), so
    unset ``lora_target_modules`` shows the family's default targets, not an empty list."""
    import dataclasses

    full = args.to_dict()
    items = {k: full[k] for k in _TRAINING_ARG_FIELDS if k in full and full[k] not in (None, "", [])}
    defaults = {f.name: f.default for f in dataclasses.fields(args)} if dataclasses.is_dataclass(args) else {}
    items.update({k: full[k] for k in _GCL_ARG_FIELDS
                  if k in full and full[k] not in (None, "", []) and full[k] != defaults.get(k)})
    to_lora = getattr(args, "lora_config", None)
    lora = to_lora(model) if callable(to_lora) else None
    if lora is not None:
        targets = lora.target_modules  # peft keeps a list as a set; a string is a regex
        items["lora"] = {"r": lora.r, "lora_alpha": lora.lora_alpha, "lora_dropout": lora.lora_dropout,
                         "target_modules": targets if isinstance(targets, str) else sorted(targets or ())}
    return items


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text.replace("|", "\\|").replace("\n", " ").replace("`", "'")


def _count(model: Any, form: str) -> str:
    if form == "adapter":
        n = sum(p.numel() for name, p in model.backbone.named_parameters() if "lora_" in name)
        return f"{n:,} in the LoRA adapter"
    return f"{sum(p.numel() for p in model.parameters()):,}"


def _summary(form: str, cls: str, base_model: str | None) -> str:
    base = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else f"a `{cls}`"
    return {
        "full": f"A `GCLModel` fine-tuned from {base} with Generalized Contrastive Learning: it embeds images, "
                "texts and fused image+text items into one space for universal multimodal retrieval.",
        "adapter": f"A LoRA adapter for {base}, trained with Generalized Contrastive Learning for universal "
                   "multimodal retrieval over images, texts and fused image+text items.",
        "backbone": f"{base} fine-tuned with Generalized Contrastive Learning and saved as a plain `{cls}` "
                    "checkpoint: transformers alone loads it, no new code needed.",
    }[form]


_FORM_DESCRIPTIONS = {
    "full": "the full `GCLModel` (backbone + GCL config); `AutoModel` loads it after `import gcl_hf`",
    "adapter": "a peft LoRA adapter only (plus `gcl_config.json` and `gcl_extra.safetensors`); the base model "
               "is downloaded from its own repo",
    "backbone": "the merged backbone as a plain `{cls}` checkpoint (transformers alone loads it)",
}
_FUSION_DESCRIPTIONS = {
    "sum": "UniIR's score fusion: raw image and text projections added, then L2-normalised",
    "mean": "the mean of the L2-normalised image and text embeddings, then L2-normalised",
    "mlp": "score fusion plus a learned residual MLP head (stored with the GCL weights)",
    "backbone": "the backbone's own fused encoder (`get_fused_features`)",
}
_NEGATIVES_DESCRIPTIONS = {
    "all": "all — one softmax over the batch's image, text and fused embeddings (the paper's Eq. 2)",
    "modality": "modality — a separate InfoNCE per pair over the target modality (CLIP's loss for image↔text pairs)",
}
_LORA_NOTES = {
    "full": "The adapter is stored unmerged inside the checkpoint (`config.lora_config`); "
            "`model.merge_lora()` merges it.",
    "adapter": "This repo holds only the adapter; the base weights come from {base}.",
    "backbone": "LoRA was merged into the backbone weights of this checkpoint.",
}
_FUSION_SNIPPETS = {
    "sum": "The fused (image + text) embedding of this model is "
           "`normalize(image_features + text_features)` of the raw projections (UniIR's score fusion).",
    "mean": "The fused (image + text) embedding of this model is "
            "`normalize(normalize(image_features) + normalize(text_features))`.",
}


def _load_snippet(form: str, repo_id: str, cls: str, base_model: str | None, base_revision: str | None,
                  has_processor: bool) -> str:
    rev = 'revision="main"'  # the card says: pin a commit sha for reproducibility
    processor_src = repo_id if has_processor else (base_model or "<the base model's processor>")
    if form == "full":
        processor_arg = "" if has_processor else f', processor=AutoProcessor.from_pretrained("{processor_src}")'
        return (
            "import gcl_hf  # registers the 'gcl' model type with AutoConfig / AutoModel\n"
            "from PIL import Image\n"
            f"from transformers import {'AutoModel' if has_processor else 'AutoModel, AutoProcessor'}\n\n"
            f'model = AutoModel.from_pretrained("{repo_id}", {rev})  # a gcl_hf.GCLModel\n'
            "# texts, images and fused image+text items in one call: L2-normalised [N, D], in input order\n"
            'image = Image.open("dog.jpg")\n'
            'embeddings = model.encode(["a photo of a dog", image, {"image": image, "text": "a dog"}]'
            f"{processor_arg})"
        )
    if form == "adapter":
        base = base_model or "<base model id>"
        base_rev = f', revision="{base_revision}"' if base_revision else ""
        return (
            "import gcl_hf.hub\n\n"
            f'model = gcl_hf.hub.load("{repo_id}", {rev})  # base + LoRA + GCL settings\n\n'
            "# with peft alone (the image and text towers):\n"
            "from peft import PeftModel\n"
            "from transformers import AutoModel\n\n"
            f'base = AutoModel.from_pretrained("{base}"{base_rev})\n'
            f'model = PeftModel.from_pretrained(base, "{repo_id}", {rev})'
        )
    return (
        f"from transformers import AutoProcessor, {cls}\n\n"
        f'model = {cls}.from_pretrained("{repo_id}", {rev})\n'
        f'processor = AutoProcessor.from_pretrained("{processor_src}")\n'
        "image_embeds = model.get_image_features(**processor(images=images, return_tensors='pt')).pooler_output"
    )


__all__ = ["BASE_TAGS", "FORMS", "build_model_card", "default_template_path", "eval_results_from_json",
           "hub_id_or_none", "render_training_card"]
