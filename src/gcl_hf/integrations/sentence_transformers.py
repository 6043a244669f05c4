"""sentence-transformers: every saved GCL model (full and merged-backbone forms) loads with
``SentenceTransformer(path)``; the files are written by :mod:`gcl_hf.modeling.st_format` at save time.
:func:`encode_fused` gives fused embeddings from a plain-backbone ``SentenceTransformer`` (score fusion), which ST's
own modules cannot express.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gcl_hf.modeling.st_format import (SENTENCE_TRANSFORMERS_FORMS, sentence_transformers_files,
                                       write_sentence_transformers_files)

__all__ = ["SENTENCE_TRANSFORMERS_FORMS", "encode_fused", "sentence_transformers_files",
           "write_sentence_transformers_files"]


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
    from sentence_transformers.util import batch_to_device

    from gcl_hf.modeling.fusion import fuse

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
            chunks.append(fuse(fusion, *raw).float().cpu())
    out = torch.cat(chunks) if chunks else torch.empty(0, model.get_embedding_dimension())
    return out.numpy() if convert_to_numpy else out
