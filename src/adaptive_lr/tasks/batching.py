"""Batch sources other than a ``DataLoader`` that a task's ``batches`` may return.

:class:`GroupedBatches` is what :meth:`adaptive_lr.distributed.World.shard` needs from such a
source to give each rank its share of every batch; :class:`LengthGroupedBatches` (speech's
batches) is one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence, Sized
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class GroupedBatches(Protocol):
    """A batch source that hands out the index lists of a pass and collates them itself.

    ``World.shard`` takes each rank's positions of every index list of :meth:`groups`, reads
    the items from ``dataset`` and batches them with ``collate``; ``batch_size`` (the global
    batch) and ``len(dataset)`` give the number of steps a pass has.

    Attributes:
        dataset: the items, indexed by the groups' indices.
        collate: turns a list of items into one batch.
        batch_size: the most indices a group holds.
    """

    dataset: Sized
    collate: Callable[[list], Any]
    batch_size: int

    def groups(self) -> list[list[int]]:
        """The index lists of one pass, in batch order (may draw from a generator)."""
        ...

    def __len__(self) -> int:
        """Batches in one pass."""
        ...

    def __iter__(self) -> Iterator[Any]:
        """The collated batches of one pass."""
        ...


class LengthGroupedBatches:
    """Batches of items of similar length, re-drawn on every pass when shuffling.

    Like a ``DataLoader``, one object serves every epoch: each ``iter()`` draws
    a new grouping from ``generator``, so runs are reproducible from its seed.
    Items are ordered by length in units of ``bucket`` (rounded up) with random order
    inside each unit, cut into batches, and the batches are shuffled.

    Args:
        dataset: the items.
        batch_size: items per batch (the last one may hold fewer).
        shuffle: draw a new grouping and batch order on every pass, else sort once by length.
        generator: what the draws come from.
        collate: turns a list of items into one batch.
        lengths: the length of each item (default: ``dataset.lengths``).
        bucket: lengths that round up to the same multiple of ``bucket`` count as equal
            (speech: 0.1 s of samples, its padding granularity).

    Raises:
        TypeError: no ``lengths`` given and ``dataset`` has none.
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator,
        collate: Callable[[list], Any],
        lengths: Sequence[int] | np.ndarray | None = None,
        bucket: int = 1,
    ):
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator = generator
        self.collate = collate
        if lengths is None:
            lengths = getattr(dataset, "lengths", None)
        if lengths is None:
            raise TypeError(f"{type(dataset).__name__} has no lengths: pass each item's length as lengths=")
        self.buckets = -(-np.asarray(lengths, dtype=np.int64) // int(bucket))

    def __len__(self) -> int:
        return -(-len(self.buckets) // self.batch_size)

    def groups(self) -> list[list[int]]:
        """The index groups of one pass (draws from the generator when shuffling)."""
        n = len(self.buckets)
        if self.shuffle:
            # random order inside each padded length, then a stable sort by length:
            # groups change from pass to pass but stay tight
            perm = torch.randperm(n, generator=self.generator).numpy()
            order = perm[np.argsort(self.buckets[perm], kind="stable")]
        else:
            order = np.argsort(self.buckets, kind="stable")
        groups = [order[i : i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        if self.shuffle:
            groups = [groups[i] for i in torch.randperm(len(groups), generator=self.generator).tolist()]
        return groups

    def __iter__(self) -> Iterator[Any]:
        for group in self.groups():
            yield self.collate([self.dataset[i] for i in group])


__all__ = ["GroupedBatches", "LengthGroupedBatches"]
