"""mteb / MIEB: run GCL models on mteb's image, text and fused (any-to-any) retrieval tasks.

:class:`GCLEncoder` follows mteb 2.x's encoder protocol (``encode(DataLoader, *, task_metadata, hf_split,
hf_subset, prompt_type)``) with ``GCLModel.encode`` underneath: each batch row becomes a text, an image or a
fused ``{"image", "text"}`` item according to the columns it carries, so i2t, t2i, i2i, it2t, t2it, it2i and
it2it tasks all run, with cosine similarity over the L2-normalised embeddings. :func:`gcl_model_meta` gives the
``ModelMeta`` (image + text modalities) that lets ``mteb.evaluate`` accept the model for image tasks::

    import mteb
    from gcl_hf.integrations.mteb import GCLEncoder

    encoder = GCLEncoder("me/my-gcl-model")          # any published form, or a local directory, or a GCLModel
    tasks = mteb.get_tasks(tasks=["WebQAT2ITRetrieval", "OVENIT2ITRetrieval", "CIRRIT2IRetrieval"])
    results = mteb.evaluate(encoder, tasks, encode_kwargs={"batch_size": 64})

GCL models use no instructions: task prompts are ignored (``use_instructions=False``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction
from tqdm.auto import tqdm

from gcl_hf.modeling.encode import find_processor
from gcl_hf.modeling.engine import infer_modality
from gcl_hf.modeling.model import GCLModel

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.types import PromptType
    from torch.utils.data import DataLoader

__all__ = ["GCLEncoder", "batch_items", "gcl_model_meta"]


def _load(model: str | os.PathLike | GCLModel, revision: str | None) -> GCLModel:
    if isinstance(model, GCLModel):
        return model
    from gcl_hf.hub.loading import load

    return load(model, revision=revision)


def _meta_name(model: GCLModel, name: str | None) -> str:
    """mteb wants ``org/name``: the Hub id or path the model came from, else ``gcl-hf/<directory name>``."""
    name = name or model.name_or_path or model._unwrapped_backbone().name_or_path or ""
    name = str(name).rstrip("/")
    if "/" in name and not os.path.isabs(name) and not name.startswith(".") and not os.path.exists(name):
        return name  # a Hub id (a relative path that exists here is a directory, not an id)
    return f"gcl-hf/{os.path.basename(name) or 'model'}"


def gcl_model_meta(
    model: str | os.PathLike | GCLModel,
    *,
    name: str | None = None,
    revision: str | None = None,
    **overrides: Any,
) -> ModelMeta:
    """The mteb ``ModelMeta`` of a GCL model (image + text modalities, cosine similarity, no instructions).

    ``meta.load_model()`` (what ``mteb.evaluate(meta, tasks)`` does) builds a :class:`GCLEncoder` from the Hub id
    or directory ``model`` names; mteb then also asks for its ``image`` extra (torchvision), which gcl-hf does not
    need: ``mteb.evaluate(GCLEncoder(...), tasks)`` skips that. ``overrides`` set any other ``ModelMeta`` field
    (``license``, ``training_datasets``, ``release_date``, ...).
    """
    loaded = _load(model, revision)
    text_config = getattr(loaded.config.backbone_config, "text_config", None)
    source = None if isinstance(model, GCLModel) else str(model)
    fields: dict[str, Any] = dict(
        loader=GCLEncoder,
        loader_kwargs={"model_path": source} if source is not None else {},
        name=_meta_name(loaded, name if name is not None else source),
        revision=revision,
        release_date=None,
        languages=None,
        n_parameters=sum(p.numel() for p in loaded.parameters()),
        memory_usage_mb=None,
        max_tokens=getattr(text_config, "max_position_embeddings", None),
        embed_dim=loaded.embedding_dim,
        license=None,
        open_weights=True,
        public_training_code="https://arxiv.org/abs/2509.25638",
        public_training_data=None,
        framework=["PyTorch", "Transformers", "safetensors"],
        similarity_fn_name=ScoringFunction.COSINE,
        use_instructions=False,
        training_datasets=None,
        modalities=["image", "text"],
        model_type=["dense"],
    )
    fields.update(overrides)
    return ModelMeta(**fields)


def batch_items(batch: dict[str, Any], *, offset: int = 0, task: str = "task") -> list[Any]:
    """The ``GCLModel.encode`` items of one mteb batch: a row with an image and a non-empty text is fused, a row
    with one of them is that modality; a row with neither raises a `ValueError` naming the task and the row."""
    images, texts = batch.get("image"), batch.get("text")
    if images is None and texts is None:
        size = max((len(v) for v in batch.values() if hasattr(v, "__len__")), default=0)
        if size:  # never 0 embeddings for rows that exist: mteb would score a task on nothing
            raise ValueError(f"{task}: rows {offset}-{offset + size - 1} have no 'image' or 'text' column "
                             f"(columns {sorted(batch)}); gcl-hf encodes images, texts or both")
        return []
    size = len(images) if images is not None else len(texts)
    items: list[Any] = []
    for i in range(size):
        image = images[i] if images is not None else None
        text = texts[i] if texts is not None else None
        try:
            modality = infer_modality(image, text)
        except ValueError:
            raise ValueError(f"{task}: row {offset + i} has neither an image nor a text (columns {sorted(batch)})"
                             ) from None
        keep = ("image", "text") if modality == "fused" else (modality,)
        items.append({key: {"image": image, "text": text}[key] for key in keep})
    return items


class GCLEncoder(AbsEncoder):
    """mteb encoder over a `GCLModel`: a Hub id / local directory (any published form) or a loaded model.

    ``model_path`` (set by :func:`gcl_model_meta`'s loader) is where to load from when ``model_name`` is only the
    ``org/name`` label mteb files results under.
    """

    def __init__(
        self,
        model_name: str | os.PathLike | GCLModel,
        revision: str | None = None,
        *,
        model_path: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        processor: Any | None = None,
        **kwargs: Any,
    ) -> None:
        self.model = _load(model_path if model_path is not None else model_name, revision).eval()
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(device)
        self.processor = processor if processor is not None else find_processor(self.model)
        source = model_path if model_path is not None else None if isinstance(model_name, GCLModel) else model_name
        self.mteb_model_meta = gcl_model_meta(
            self.model, name=None if isinstance(model_name, GCLModel) else str(model_name), revision=revision,
            loader_kwargs={"model_path": str(source)} if source is not None else {})

    def encode(
        self,
        inputs: DataLoader,
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embed every row of ``inputs`` (texts, images or both per row) → float32 ``[N, D]``, rows in order."""
        show = bool(kwargs.get("show_progress_bar", True))
        chunks, seen = [], 0
        for batch in tqdm(inputs, desc=f"{task_metadata.name} ({prompt_type.value if prompt_type else 'all'})",
                          unit="batch", disable=not show):
            items = batch_items(batch, offset=seen, task=task_metadata.name)
            seen += len(items)
            if items:
                chunks.append(self.model.encode(items, processor=self.processor, batch_size=len(items),
                                                show_progress_bar=False))
        if not chunks:
            return np.zeros((0, self.model.embedding_dim), dtype=np.float32)
        return np.concatenate(chunks)
