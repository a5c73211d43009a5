"""Batch samplers: P identities x K images (PK), and plain shuffled batches. Both DDP-aware.

A *global* batch is drawn from ``(seed, epoch)`` alone; rank ``r`` of ``W`` takes the r-th of W
equal contiguous slices of it (whole identities for PK), so the ranks' batches concatenated in
rank order are exactly the batch one process would train on. ``set_epoch`` changes the draw,
``start_batch`` skips batches already trained on when a run resumes mid-epoch.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from faceverify.errors import InvalidInputError


class _ShardedBatchSampler(Sampler[list[int]]):
    """What both samplers share: a seed, this process's rank among ``num_replicas``, and the
    position (epoch, first batch to yield) that a resumed run restores with ``set_epoch``."""

    def __init__(self, seed: int, num_replicas: int, rank: int):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self.seed, self.num_replicas, self.rank = seed, num_replicas, rank
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = int(epoch), int(start_batch)


class PKSampler(_ShardedBatchSampler):
    """Batches of ``p`` identities x ``k`` images (Hermans et al. 2017).

    An epoch visits the identities in a random order, ``p`` at a time (``len(self)`` =
    ``n_identities // p`` batches); each identity contributes ``k`` distinct images, drawn with
    replacement when it has fewer than ``k``.
    """

    def __init__(self, labels: Sequence[int] | np.ndarray, p: int, k: int, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0):
        super().__init__(seed, num_replicas, rank)
        labels = np.asarray(labels, dtype=np.int64)
        if p % num_replicas:
            raise InvalidInputError(f"P = {p} identities per batch must divide evenly over {num_replicas} ranks")
        self.identities = np.unique(labels)
        if self.identities.size < p:
            raise InvalidInputError(f"P = {p} identities per batch but the dataset has only {self.identities.size}")
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], self.identities)
        ends = np.append(bounds[1:], labels.size)
        self.members = {int(c): order[s:e] for c, s, e in zip(self.identities, bounds, ends)}
        self.p, self.k = p, k

    def __len__(self) -> int:
        return self.identities.size // self.p

    def global_batches(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        identities = rng.permutation(self.identities)
        for b in range(len(self)):
            batch: list[int] = []
            for identity in identities[b * self.p : (b + 1) * self.p]:
                pool = self.members[int(identity)]
                replace = pool.size < self.k
                batch.extend(rng.choice(pool, size=self.k, replace=replace).tolist())
            yield batch

    def __iter__(self) -> Iterator[list[int]]:
        share = (self.p // self.num_replicas) * self.k
        for index, batch in enumerate(self.global_batches()):
            if index >= self.start_batch:
                yield batch[self.rank * share : (self.rank + 1) * share]


class ShuffledBatchSampler(_ShardedBatchSampler):
    """Random batches of ``batch_size`` (global) over all samples, reshuffled every epoch."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        super().__init__(seed, num_replicas, rank)
        if batch_size % num_replicas:
            raise InvalidInputError(f"batch size {batch_size} must divide evenly over {num_replicas} ranks")
        if n < batch_size:
            raise InvalidInputError(f"batch size {batch_size} exceeds the {n} samples")
        self.n, self.batch_size = n, batch_size

    def __len__(self) -> int:
        return self.n // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        share = self.batch_size // self.num_replicas
        for index in range(self.start_batch, len(self)):
            batch = order[index * self.batch_size : (index + 1) * self.batch_size]
            yield batch[self.rank * share : (self.rank + 1) * share].tolist()
