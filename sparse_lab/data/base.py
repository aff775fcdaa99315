"""In-memory image data: each split is one uint8 tensor, batches are converted on the training device."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from sparse_lab.data.loader import TensorBatchLoader
from sparse_lab.errors import ConfigError


class InMemoryImageDataModule(L.LightningDataModule):
    """Base for image classification data held as whole tensors.

    Subclasses implement :meth:`load_split` (uint8 images ``(N, C, H, W)`` and int64 labels) and set
    ``input_shape``, ``num_classes``, ``mean`` and ``std`` (the data set's per-channel statistics, which
    ``mean=`` / ``std=`` replace). The training split is divided into
    train/val with a fixed ``split_seed``; the official test split is the test set.
    """

    input_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __init__(
        self,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        val_size: int = 0,
        split_seed: int = 0,
        test_each_epoch: bool = False,
        seed: int = 0,
        augment: Callable[[Tensor], Tensor] | None = None,
        resize: int | None = None,
        standardize: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1 or eval_batch_size < 1:
            raise ConfigError(f"batch sizes must be >= 1, got batch_size={batch_size}, eval_batch_size={eval_batch_size}")
        if val_size < 0:
            raise ConfigError(f"data.val_size must be >= 0, got {val_size}")
        if hasattr(self, "mean"):  # a subclass that sets its statistics in __init__ calls this itself
            self.set_statistics(mean, std)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_size = val_size
        self.split_seed = split_seed
        self.test_each_epoch = test_each_epoch
        self.seed = seed
        self.augment = augment
        self.standardize = standardize  # False: pixels / 255 only, as torchvision's ToTensor without Normalize
        self.resize = resize  # square side to resize every batch to (bilinear, on device), e.g. MNIST -> 32
        if resize is not None and hasattr(self, "input_shape"):
            self.input_shape = (self.input_shape[0], resize, resize)  # type: ignore[assignment]
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}
        self._norm: tuple[Tensor, Tensor] | None = None

    def set_statistics(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        """Standardize with these per-channel statistics instead of the data set's own (None keeps them):
        e.g. ``mean=[0.5] std=[0.5]`` maps pixels to [-1, 1] as torchvision's ``Normalize((0.5,), (0.5,))``."""
        for name, value in (("mean", mean), ("std", std)):
            if value is None:
                continue
            value = tuple(float(v) for v in value)
            if len(value) != len(self.mean) or (name == "std" and min(value) <= 0):
                each = ", each > 0" if name == "std" else ""
                raise ConfigError(f"data.{name}={list(value)} is invalid: it must be {len(self.mean)} number(s), one per channel{each}")
            setattr(self, name, value)
        self._norm = None

    # ---- to implement ----
    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        """Return the official train or test split as uint8 ``(N, C, H, W)`` and int64 ``(N,)``."""
        raise NotImplementedError

    # ---- Lightning hooks ----
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        images, labels = self.load_split(train=True)
        if self.val_size >= len(images):
            raise ConfigError(
                f"data.val_size={self.val_size} leaves no training data ({len(images)} training images); "
                "use a smaller data.val_size (0 trains on all of them)"
            )
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.split_seed))
        val_idx, train_idx = order[: self.val_size].sort().values, order[self.val_size :].sort().values
        self.splits["train"] = (images[train_idx], labels[train_idx])
        if self.val_size > 0:
            self.splits["val"] = (images[val_idx], labels[val_idx])
        self.splits["test"] = self.load_split(train=False)

    @property
    def val_loader_names(self) -> list[str]:
        """Stage name of each loader that :meth:`val_dataloader` returns, in order."""
        names = ["val"] if self.val_size > 0 else []
        return names + (["test"] if self.test_each_epoch else [])

    def train_dataloader(self) -> TensorBatchLoader:
        # Same permutation on every rank, strided shards of equal length (padded like DistributedSampler):
        # every rank takes the same number of steps, as DDP's gradient all-reduce requires.
        return TensorBatchLoader(
            *self._on_device("train"), self.batch_size, shuffle=True, seed=self.seed, uneven="pad", **self._shard()
        )

    def val_dataloader(self) -> list[TensorBatchLoader]:
        return [self._eval_loader(name) for name in self.val_loader_names]

    def test_dataloader(self) -> TensorBatchLoader:
        return self._eval_loader("test")

    def _eval_loader(self, name: str) -> TensorBatchLoader:
        # Contiguous shards, no sample padded or dropped: the torchmetrics states (counts and sums)
        # are summed over ranks on compute(), so the result is exactly the whole split's.
        return TensorBatchLoader(*self._on_device(name), self.eval_batch_size, uneven="split", **self._shard())

    def _shard(self) -> dict[str, int]:
        """``num_replicas`` and ``rank`` of this process (1 and 0 without data parallelism)."""
        kwargs = self.trainer.distributed_sampler_kwargs if self.trainer is not None else None
        return {"num_replicas": kwargs["num_replicas"], "rank": kwargs["rank"]} if kwargs else {}

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        images, labels = batch
        x = images.float()
        owned = x is not images  # a fresh copy, normalized in place (the dataset's own tensor is not)
        if self.resize is not None and x.shape[-1] != self.resize:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
            owned = True
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            x = self.augment(x)
        return self.normalize(x, in_place=owned), labels

    # ---- helpers ----
    def normalize(self, x: Tensor, in_place: bool = False) -> Tensor:
        """Map float pixels in [0, 255] to ``(x / 255 - mean) / std`` per channel (``x / 255`` if not
        ``standardize``); ``in_place``: overwrite ``x`` instead of allocating the result."""
        if self._norm is None or self._norm[0].device != x.device:
            mean, std = (self.mean, self.std) if self.standardize else ((0.0,) * len(self.mean), (1.0,) * len(self.std))
            mean = torch.tensor(mean, device=x.device).view(1, -1, 1, 1) * 255.0
            inv_std = 1.0 / (torch.tensor(std, device=x.device).view(1, -1, 1, 1) * 255.0)
            self._norm = (mean, inv_std)
        mean, inv_std = self._norm
        return (x.sub_(mean) if in_place else x - mean).mul_(inv_std)

    def _on_device(self, name: str) -> tuple[Tensor, Tensor]:
        if not self.splits:
            self.setup()
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        images, labels = self.splits[name]
        if images.device != device:
            images, labels = images.to(device), labels.to(device)
            self.splits[name] = (images, labels)
        return images, labels
