"""The contrastive batch rule, in one place: how many in-batch negatives a loss gives each anchor, and what
training does when that is none or few.

A contrastive loss learns from the other pairs of its batch (gathered across processes). With ``B`` pairs per
step across all processes, an anchor has

- ``negatives="modality"`` (CLIP's per-pair InfoNCE, the sigmoid objective): ``B - 1`` negatives;
- ``negatives="all"`` (GCL's Eq. 2, one softmax over every embedding of the ``M`` modalities in the pairs):
  ``M * B - 2`` (every batch embedding but itself and its target).

**No negatives** (e.g. ``per_device_train_batch_size=1`` with CLIP pairs on one process) means a loss of 0 and a
gradient of 0 every step: `GCLTrainer` refuses it, naming the batch size. A *last* partial batch without
negatives (one pair left over on one process) is dropped each epoch. **A batch of fewer than**
:data:`SMALL_BATCH` **pairs** trains, with a warning: so few negatives give a weak retrieval signal (CLIP-style
training uses hundreds to thousands); raise the batch size, or fit a large batch in memory with
``gradient_cache_chunk_size``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

__all__ = ["SMALL_BATCH", "ContrastiveBatchError", "check_contrastive_batch", "drop_last_batch_without_negatives",
           "negatives_per_anchor"]

logger = logging.getLogger(__name__)

#: below this many pairs per step (across processes) training warns that the batch is small for the loss
SMALL_BATCH = 64


class ContrastiveBatchError(OSError, ValueError):
    """A training set-up whose contrastive batch has no negatives: it cannot learn (reported as one line)."""


def negatives_per_anchor(pairs: Sequence[tuple[str, str]], negatives: str, batch: int) -> int:
    """In-batch negatives of each anchor for a contrastive batch of ``batch`` pairs (see the module docstring)."""
    if negatives == "all":
        return len({m for pair in pairs for m in pair}) * batch - 2
    return batch - 1


def check_contrastive_batch(pairs: Sequence[tuple[str, str]], negatives: str, per_device: int,
                            num_processes: int) -> None:
    """Refuse a batch without negatives; warn when it is smaller than :data:`SMALL_BATCH` pairs."""
    batch = per_device * num_processes
    count = negatives_per_anchor(pairs, negatives, batch)
    where = f"per_device_train_batch_size={per_device}" + (f" x {num_processes} processes" if num_processes > 1
                                                            else "")
    if count < 1:
        raise ContrastiveBatchError(
            f"{where} gives a contrastive batch of {batch} pair(s): no in-batch negatives with negatives="
            f"{negatives!r}, so the loss and its gradient are 0 every step; use a batch of at least 2 pairs")
    if batch < SMALL_BATCH:
        logger.warning("%s: a contrastive batch of %d pairs gives each anchor %d in-batch negatives (negatives=%r); "
                       "below %d pairs the retrieval signal is weak: raise the batch size, or use "
                       "gradient_cache_chunk_size to fit a large batch in memory", where, batch, count, negatives,
                       SMALL_BATCH)


def drop_last_batch_without_negatives(pairs: Sequence[tuple[str, str]], negatives: str, num_rows: int,
                                      per_device: int, num_processes: int) -> bool:
    """Whether the last partial batch of an epoch would have no negatives (so it must be dropped). With several
    processes the last batch is evened out by repeating rows, so only one process can leave a batch of one."""
    left = num_rows % per_device if num_processes == 1 else 0
    return bool(left) and negatives_per_anchor(pairs, negatives, left) < 1
