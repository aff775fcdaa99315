"""MNIST, Fashion-MNIST and CIFAR-10 through torchvision's own dataset classes and download code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchvision import datasets
from torchvision.datasets.utils import check_integrity

from sparse_lab.data.augment import (
    BatchAugment,
    ColorJitter,
    RandomCropWithPadding,
    RandomErasing,
    RandomHorizontalFlip,
    RandomRotation,
)
from sparse_lab.data.base import InMemoryImageDataModule
from sparse_lab.errors import ConfigError, DataNotFoundError


class TorchvisionDataModule(InMemoryImageDataModule):
    """Loads a torchvision dataset once into uint8 tensors.

    ``download=True`` uses torchvision's download code: it fetches the archives when the
    network allows and otherwise extracts archives already placed under ``data_dir``.
    """

    dataset_cls: type

    def __init__(self, data_dir: str = "./data", download: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data_dir = str(Path(data_dir).expanduser())
        self.download = download

    def expected_files(self) -> list[tuple[Path, str | None]]:
        """Archive paths torchvision looks for, with their md5 sums."""
        raw = Path(self.data_dir) / self.dataset_cls.__name__ / "raw"
        return [(raw / name, md5) for name, md5 in self.dataset_cls.resources]

    def prepare_data(self) -> None:
        self._dataset(train=True)
        self._dataset(train=False)

    def _dataset(self, train: bool) -> Any:
        try:
            return self.dataset_cls(self.data_dir, train=train, download=False)
        except RuntimeError:
            if not self.download:
                raise self._not_found("download disabled (data.download=false)") from None
        try:
            return self.dataset_cls(self.data_dir, train=train, download=True)
        except Exception as exc:  # network errors, bad checksums, truncated archives
            raise self._not_found(f"download failed: {type(exc).__name__}: {exc}") from None

    def _not_found(self, reason: str) -> DataNotFoundError:
        lines = []
        for path, md5 in self.expected_files():
            if not path.exists():
                state = "missing"
            elif md5 is not None and not check_integrity(str(path), md5):
                state = "corrupt (md5 mismatch: delete it and copy it again)"
            else:
                state = "ok"
            lines.append(f"  {path}  [{state}]")
        name = self.dataset_cls.__name__
        return DataNotFoundError(
            f"{name} not found under data_dir={self.data_dir!r} ({reason}).\n"
            "Expected files:\n" + "\n".join(lines) + "\n"
            "Fix: copy the original archives there (a read-only copy must be copied into a writable dir first), "
            "or point to a folder that has them with SPARSE_LAB_DATA=/path or data.data_dir=/path, "
            "or allow network access so torchvision can download them."
        )


class MNISTDataModule(TorchvisionDataModule):
    """MNIST: 60,000 train / 10,000 test, 1x28x28."""

    dataset_cls = datasets.MNIST
    input_shape = (1, 28, 28)
    num_classes = 10
    mean = (0.1307,)
    std = (0.3081,)

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        ds = self._dataset(train)
        return ds.data.unsqueeze(1).contiguous(), ds.targets.long()


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST: same layout as MNIST."""

    dataset_cls = datasets.FashionMNIST
    mean = (0.2860,)
    std = (0.3530,)


class CIFAR10DataModule(TorchvisionDataModule):
    """CIFAR-10: 50,000 train / 10,000 test, 3x32x32; optional crop+flip augmentation on device."""

    dataset_cls = datasets.CIFAR10
    input_shape = (3, 32, 32)
    num_classes = 10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)

    def __init__(self, augment: bool | str = True, **kwargs: Any) -> None:
        """``augment``: ``True``/``"crop_flip"`` (crop with padding 4, flip), ``"reference"`` (the SPEC's:
        also rotation 15, color jitter (0.2, 0.2, 0.2, 0.1) and random erasing), or ``False``."""
        seed = kwargs.get("seed", 0)
        steps = [RandomCropWithPadding(4), RandomHorizontalFlip(0.5)]
        if augment == "reference":
            mean_pixel = tuple(255 * m for m in self.mean)
            steps += [RandomRotation(15), ColorJitter(0.2, 0.2, 0.2, 0.1), RandomErasing(0.5, fill=mean_pixel)]
        elif augment not in (True, False, "crop_flip"):
            raise ConfigError(f"data.augment={augment!r} is not one of true, false, crop_flip, reference")
        super().__init__(augment=BatchAugment(*steps, seed=seed) if augment else None, **kwargs)

    def expected_files(self) -> list[tuple[Path, str | None]]:
        cls = self.dataset_cls
        return [(Path(self.data_dir) / cls.filename, cls.tgz_md5)]

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        ds = self._dataset(train)
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return images, torch.as_tensor(ds.targets, dtype=torch.long)
