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


class RandomRotation:
    """Rotate each sample by an angle drawn uniformly from ``[-degrees, degrees]`` (bilinear, zero fill)."""

    def __init__(self, degrees: float = 15.0) -> None:
        self.degrees = degrees

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        b = x.shape[0]
        angle = (torch.rand(b, generator=generator, device=x.device) * 2 - 1) * self.degrees * torch.pi / 180
        cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class ColorJitter:
    """Per-sample brightness, contrast and saturation factors in ``[1 - f, 1 + f]`` and a hue shift in
    ``[-hue, hue]`` (turns), on RGB pixels in [0, 255]. The hue shift rotates the chroma in YIQ space,
    a linear approximation of torchvision's HSV shift."""

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2, hue: float = 0.1) -> None:
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        b = x.shape[0]

        def factor(f: float) -> Tensor:
            return (1 + (torch.rand(b, generator=generator, device=x.device) * 2 - 1) * f).view(b, 1, 1, 1)

        x = x * factor(self.brightness)
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]) if x.shape[1] == 3 else x
        x = (x - gray.mean((2, 3), keepdim=True)) * factor(self.contrast) + gray.mean((2, 3), keepdim=True)
        if x.shape[1] == 3:
            gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
            x = (x - gray) * factor(self.saturation) + gray
            if self.hue > 0:
                to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=x.device)
                yiq = torch.einsum("ij,bjhw->bihw", to_yiq, x)
                turn = (torch.rand(b, generator=generator, device=x.device) * 2 - 1) * self.hue * 2 * torch.pi
                cos, sin = turn.cos().view(b, 1, 1), turn.sin().view(b, 1, 1)
                i, q = yiq[:, 1], yiq[:, 2]
                yiq = torch.stack([yiq[:, 0], i * cos - q * sin, i * sin + q * cos], 1)
                x = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), yiq)
        return x.clamp(0, 255)


class RandomErasing:
    """With probability ``p`` per sample, fill one rectangle (area ``scale`` of the image, aspect ratio
    ``ratio``) with ``fill`` (per channel; the pixel mean erases to 0 after normalization)."""

    def __init__(self, p: float = 0.5, scale: tuple[float, float] = (0.02, 0.33), ratio: tuple[float, float] = (0.3, 3.3),
                 fill: tuple[float, ...] = (0.0,)) -> None:
        self.p, self.scale, self.ratio, self.fill = p, scale, ratio, fill

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        b, c, h, w = x.shape
        dev = x.device
        area = (self.scale[0] + torch.rand(b, generator=generator, device=dev) * (self.scale[1] - self.scale[0])) * h * w
        log_r = torch.log(torch.tensor(self.ratio, device=dev))
        aspect = torch.exp(log_r[0] + torch.rand(b, generator=generator, device=dev) * (log_r[1] - log_r[0]))
        eh = (area * aspect).sqrt().round().clamp(1, h).long()
        ew = (area / aspect).sqrt().round().clamp(1, w).long()
        top = (torch.rand(b, generator=generator, device=dev) * (h - eh + 1)).long()
        left = (torch.rand(b, generator=generator, device=dev) * (w - ew + 1)).long()
        apply = torch.rand(b, generator=generator, device=dev) < self.p
        rows = torch.arange(h, device=dev).view(1, h, 1)
        cols = torch.arange(w, device=dev).view(1, 1, w)
        box = ((rows >= top.view(b, 1, 1)) & (rows < (top + eh).view(b, 1, 1)) & (cols >= left.view(b, 1, 1))
               & (cols < (left + ew).view(b, 1, 1)) & apply.view(b, 1, 1))
        fill = torch.tensor(self.fill, device=dev, dtype=x.dtype).view(1, -1, 1, 1).expand(b, c, h, w)
        return torch.where(box.unsqueeze(1), fill, x)
