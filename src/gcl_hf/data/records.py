"""Record bookkeeping that travels with training batches: each record's dataset row, and how many records a
collator dropped (``errors="skip"``), so that errors and skip counts name dataset rows even from dataloader
worker processes."""

from __future__ import annotations

import sys
from typing import Any

import torch

__all__ = ["ROW_INDEX_COLUMN", "SKIPPED_KEY", "SkipCountingCollator", "with_row_index"]

#: Column added to training datasets so that errors (and skips) name the dataset row, not the batch position.
ROW_INDEX_COLUMN = "__index__"
#: Key the trainer's collator wrapper adds to each batch: records dropped by ``image_errors="skip"``.
SKIPPED_KEY = "num_skipped"


class _IndexedDataset(torch.utils.data.Dataset):
    """A map-style dataset of dict records, each with its index under ``__index__``."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        record = self.dataset[index]
        return {**record, ROW_INDEX_COLUMN: index} if isinstance(record, dict) else record


def with_row_index(dataset: Any) -> Any:
    """``dataset`` with a ``__index__`` column (row number) unless it has ``id`` / ``__index__`` already, so that
    a bad image or caption is reported by its row in the dataset. Iterable datasets pass through."""
    if dataset is None or isinstance(dataset, dict):
        return dataset
    # a `datasets` object implies the package is imported already: never import it for a plain torch dataset
    datasets = sys.modules.get("datasets")
    if datasets is not None and isinstance(dataset, datasets.Dataset):
        if {"id", ROW_INDEX_COLUMN} & set(dataset.column_names):
            return dataset
        return dataset.add_column(ROW_INDEX_COLUMN, list(range(len(dataset))))
    if isinstance(dataset, torch.utils.data.IterableDataset) or (
        datasets is not None and isinstance(dataset, datasets.IterableDataset)
    ):
        return dataset
    if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        return _IndexedDataset(dataset)
    return dataset


class SkipCountingCollator:
    """Wrap a collator and add ``num_skipped`` (records it dropped, e.g. with ``errors="skip"``) to each batch,
    so the trainer can count skips made in dataloader worker processes."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator.collator if isinstance(collator, SkipCountingCollator) else collator

    def __call__(self, records: list[Any]) -> Any:
        batch = self.collator(records)
        if isinstance(batch, dict):
            sizes = [v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor) and v.ndim > 0]
            if sizes:
                batch[SKIPPED_KEY] = len(records) - sizes[0]
        return batch

    def __getattr__(self, name: str) -> Any:  # expose the wrapped collator's attributes (processor, errors...)
        if name == "collator":
            raise AttributeError(name)
        return getattr(self.collator, name)
