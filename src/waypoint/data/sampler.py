"""The resumable sampler: batch order is a function of (seed, epoch) only, and it can start mid-epoch.

Every rank draws the same global order and takes slice ``rank`` of each global batch, so the data cursor
(batches consumed) means the same thing at any world size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def order_generator(seed: int, epoch: int) -> torch.Generator:
    """A generator for the shuffling of ``epoch``, seeded by a stable hash of ``(seed, epoch)``."""
    digest = hashlib.blake2b(repr(("order", int(seed), int(epoch))).encode(), digest_size=8).digest()
    gen = torch.Generator()
    gen.manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
    return gen


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields batches of ``(epoch, index)`` pairs of one epoch, from batch ``start_batch`` on (last partial batch dropped)."""

    def __init__(
        self,
        n_items: int,
        batch_size: int,
        seed: int,
        epoch: int,
        start_batch: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1 or n_items < batch_size:
            raise ValueError(
                f"the training set has {n_items} items, fewer than one batch of {batch_size}; "
                "lower data.batch_size or raise data.max_items"
            )
        if batch_size % world_size:
            raise ValueError(
                f"data.batch_size={batch_size} is the global batch and must be divisible by the world size {world_size}"
            )
        self.n, self.bs, self.seed, self.epoch, self.start, self.shuffle = n_items, batch_size, seed, epoch, start_batch, shuffle
        self.rank, self.world = rank, world_size

    def batches_per_epoch(self) -> int:
        """Full batches in one epoch."""
        return self.n // self.bs

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = torch.randperm(self.n, generator=order_generator(self.seed, self.epoch)) if self.shuffle else torch.arange(self.n)
        per = self.bs // self.world
        for b in range(self.start, self.batches_per_epoch()):
            first = b * self.bs + self.rank * per
            yield [(self.epoch, int(i)) for i in order[first : first + per]]

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.start)
