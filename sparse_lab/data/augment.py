"""Batched image augmentation on whole uint8 or float tensors, each sample drawn independently."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class RandomCropWithPadding:
    """Zero-pad by ``padding`` then crop back to the input size at a random offset per sample."""

    def __init__(self, padding: int = 4) -> None:
        self.padding = padding

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        b, _, h, w = x.shape
        p = self.padding
        padded = F.pad(x, (p, p, p, p))
        oy = torch.randint(0, 2 * p + 1, (b, 1), generator=generator, device=x.device)
        ox = torch.randint(0, 2 * p + 1, (b, 1), generator=generator, device=x.device)
        rows = (oy + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
        cols = (ox + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
        batch = torch.arange(b, device=x.device)[:, None, None]
        return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


class RandomHorizontalFlip:
    """Mirror each sample left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        flip = torch.rand(x.shape[0], generator=generator, device=x.device) < self.p
        return torch.where(flip[:, None, None, None], x.flip(-1), x)


class BatchAugment:
    """Applies augmentations in order with one seeded generator on the batch's device."""

    def __init__(self, *transforms, seed: int = 0) -> None:
        self.transforms = transforms
        self.seed = seed
        self._generator: torch.Generator | None = None

    def generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def __call__(self, x: Tensor) -> Tensor:
        gen = self.generator(x.device)
        for t in self.transforms:
            x = t(x, gen)
        return x
