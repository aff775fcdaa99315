"""Deterministic, learnable synthetic images for tests and quick checks (no files needed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from sparse_lab.data.base import InMemoryImageDataModule


class SyntheticDataModule(InMemoryImageDataModule):
    """Each class is a fixed random prototype image; samples are prototype + Gaussian noise.

    The data depend only on ``data_seed`` (not on the run seed), so every run sees the same set.
    """

    def __init__(
        self,
        shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        train_size: int = 1024,
        test_size: int = 256,
        noise: float = 0.3,
        data_seed: int = 1234,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.input_shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
        self.num_classes = num_classes
        self.sizes = {True: train_size, False: test_size}
        self.noise = noise
        self.data_seed = data_seed
        self.mean = (0.5,) * self.input_shape[0]
        self.std = (0.25,) * self.input_shape[0]
        self.set_statistics(mean, std)

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        prototypes = torch.rand(self.num_classes, *self.input_shape, generator=torch.Generator().manual_seed(self.data_seed))
        gen = torch.Generator().manual_seed(self.data_seed + (1 if train else 2))
        n = self.sizes[train]
        labels = torch.arange(n) % self.num_classes
        labels = labels[torch.randperm(n, generator=gen)]
        x = prototypes[labels] + self.noise * torch.randn(n, *self.input_shape, generator=gen)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), labels
