"""LightningDataModules over in-memory uint8 tensors."""

from sparse_lab.data.augment import (
    BatchAugment,
    ColorJitter,
    RandomCropWithPadding,
    RandomErasing,
    RandomHorizontalFlip,
    RandomRotation,
)
from sparse_lab.data.base import InMemoryImageDataModule
from sparse_lab.data.loader import EpochPermutation, TensorBatchLoader
from sparse_lab.data.synthetic import SyntheticDataModule
from sparse_lab.data.torchvision_sets import (
    CIFAR10DataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
    TorchvisionDataModule,
)

__all__ = [
    "BatchAugment",
    "ColorJitter",
    "RandomErasing",
    "RandomRotation",
    "CIFAR10DataModule",
    "EpochPermutation",
    "FashionMNISTDataModule",
    "InMemoryImageDataModule",
    "MNISTDataModule",
    "RandomCropWithPadding",
    "RandomHorizontalFlip",
    "SyntheticDataModule",
    "TensorBatchLoader",
    "TorchvisionDataModule",
]
