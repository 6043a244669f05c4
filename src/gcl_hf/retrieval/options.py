"""One owner for the options of encoding a dataset (:class:`EncodeOptions`) and for the metric cut-offs ``k``
(:func:`parse_ks`), passed through ``evaluate_retrieval``, ``retrieve``, ``GCLIndex.build``, ``encode_corpus``,
``encode_corpus_distributed``, the trainer's evaluation and the command line instead of a dozen keywords repeated
at every layer. :func:`~gcl_hf.retrieval.distributed_encoding.encode_with` is where the options pick the path.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["EncodeOptions", "parse_ks"]


@dataclass(frozen=True)
class EncodeOptions:
    """How a dataset is encoded.

    ``batch_size`` rows per forward; ``num_workers`` DataLoader workers decoding images and running the processor;
    ``device`` where the model runs (default: where it is); ``processor_kwargs`` added to every processor call
    (``max_length`` / ``padding`` override the text settings); ``image_root`` where relative image paths resolve
    (a task's own ``image_root`` when unset); ``show_progress`` progress bars; ``cache_dir`` / ``shard_size`` the
    on-disk embedding cache (none when ``cache_dir`` is unset); ``distributed`` splits the rows over the processes
    of a ``torchrun`` / ``accelerate launch`` run (each encodes its shard, all get every row).
    """

    batch_size: int = 64
    num_workers: int = 0
    device: str | torch.device | None = None
    processor_kwargs: dict[str, Any] | None = None
    image_root: str | None = None
    show_progress: bool = True
    cache_dir: str | os.PathLike | None = None
    shard_size: int = 65536
    distributed: bool = False

    def __post_init__(self) -> None:
        for name in ("batch_size", "shard_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {self.num_workers!r}")

    @classmethod
    def resolve(cls, options: EncodeOptions | None = None, **overrides: Any) -> EncodeOptions:
        """``options`` (default: the defaults) with ``overrides`` applied; an unknown name is a `TypeError`
        listing the fields."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise TypeError(f"unknown encoding option(s) {unknown}: EncodeOptions has {sorted(fields)}")
        base = options if options is not None else cls()
        return dataclasses.replace(base, **overrides) if overrides else base

    def dataset_kwargs(self) -> dict[str, Any]:
        """The keywords of :func:`~gcl_hf.retrieval.encoding.encode_dataset`."""
        return {"image_root": self.image_root, "batch_size": self.batch_size, "num_workers": self.num_workers,
                "device": self.device, "processor_kwargs": self.processor_kwargs, "show_progress": self.show_progress}


def parse_ks(k: int | str | Sequence[int | str], name: str = "k") -> tuple[int, ...]:
    """The cut-offs ``k`` as a tuple of positive ints, from an int, a sequence or a comma-separated string
    (``"1,5,10"``); a `ValueError` naming ``name`` otherwise."""
    items = str(k).split(",") if isinstance(k, str) else [k] if isinstance(k, int) else list(k)
    try:
        ks = tuple(int(x) for x in items if not (isinstance(x, str) and not x.strip()))
    except (TypeError, ValueError):
        raise ValueError(f"{name}={k!r}: expected positive integers (an int, a list or '1,5,10')") from None
    if not ks or min(ks) < 1:
        raise ValueError(f"{name}={k!r}: expected positive integers (an int, a list or '1,5,10')")
    return ks
