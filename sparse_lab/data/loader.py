"""Batches sliced from in-memory tensors: no per-sample Dataset, no worker processes."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


class EpochPermutation:
    """Data order as a pure function of (seed, epoch), so a resumed run sees the same order.

    Lightning calls ``set_epoch`` on a loader's ``sampler`` at the start of every epoch.
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True) -> None:
        self.size = size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self, device: torch.device) -> Tensor:
        if not self.shuffle:
            return torch.arange(self.size, device=device)
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.size, generator=gen).to(device)


class TensorBatchLoader:
    """Iterates over ``(images[idx], labels[idx])`` batches of whole tensors.

    The tensors are moved to ``device`` once; each batch is one gather on that device.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"images ({len(images)}) and labels ({len(labels)}) differ in length")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = EpochPermutation(len(images), seed, shuffle)
        self.batch_sampler = None  # Lightning inspects DataLoader-like attributes

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        bs = self.batch_size
        if not self.sampler.shuffle:  # contiguous views, no copy
            for i in range(len(self)):
                yield self.images[i * bs : (i + 1) * bs], self.labels[i * bs : (i + 1) * bs]
            return
        order = self.sampler.indices(self.images.device)
        for i in range(len(self)):
            idx = order[i * bs : (i + 1) * bs]
            yield self.images[idx], self.labels[idx]
