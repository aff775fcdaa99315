"""MNIST, Fashion-MNIST and CIFAR-10 through torchvision's own dataset classes and download code."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
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


DEFAULT_CACHE_DIR = "~/.cache/sparse_lab"  # when neither data.cache_dir nor $SPARSE_LAB_CACHE says otherwise


def writable(path: Path) -> bool:
    """Whether ``path``, or its nearest existing parent when missing, may be written to.

    Both the OS's access check and the permission bits must allow it, so a ``chmod -w`` folder is
    read-only for root too (root passes every access check; it should not write into shared data).
    """
    while not path.exists() and path != path.parent:
        path = path.parent
    return os.access(path, os.W_OK) and bool(path.stat().st_mode & 0o222)


class TorchvisionDataModule(InMemoryImageDataModule):
    """Loads a torchvision dataset once into uint8 tensors.

    ``download=True`` uses torchvision's download code: it fetches the archives when the
    network allows and otherwise extracts archives already placed under ``data_dir``.

    torchvision extracts beside the archives. When that folder is read-only (e.g. a shared copy
    of the archives), the archives are symlinked (copied where links fail) into a cache folder,
    ``<cache_dir>/data/<name of data_dir>-<hash of its absolute path>/`` in ``data_dir``'s layout,
    and torchvision extracts there, md5 checks included; later runs load the extracted files. A
    cache that fails to load (e.g. an extraction that was killed) is rebuilt. Processes that share
    a cache take turns through a lock file beside it, and so do processes extracting into a writable
    ``data_dir`` (a lock file in the folder torchvision extracts into): parallel runs of a sweep
    started on fresh archives once read each other's half-written files.
    """

    dataset_cls: type

    def __init__(
        self, data_dir: str = "./data", download: bool = True, cache_dir: str | None = None, **kwargs: Any
    ) -> None:
        """``cache_dir``: where read-only archives are extracted; ``None``: ``$SPARSE_LAB_CACHE``, else
        ``~/.cache/sparse_lab``."""
        super().__init__(**kwargs)
        self.data_dir = str(Path(data_dir).expanduser())
        self.download = download
        self.cache_dir = str(Path(cache_dir or os.environ.get("SPARSE_LAB_CACHE") or DEFAULT_CACHE_DIR).expanduser())

    def expected_files(self) -> list[tuple[Path, str | None]]:
        """Archive paths torchvision looks for, with their md5 sums."""
        raw = Path(self.data_dir) / self.dataset_cls.__name__ / "raw"
        return [(raw / name, md5) for name, md5 in self.dataset_cls.resources]

    def extract_dir(self, root: Path) -> Path:
        """The folder torchvision writes (downloads, extracted files) into for data root ``root``."""
        return root / self.dataset_cls.__name__ / "raw"

    def cache_root(self) -> Path:
        """This ``data_dir``'s folder in the cache: two source folders never share one."""
        source = Path(self.data_dir).resolve()
        digest = hashlib.sha256(str(source).encode()).hexdigest()[:12]
        return Path(self.cache_dir).resolve() / "data" / f"{source.name or 'root'}-{digest}"

    def prepare_data(self) -> None:
        self.torchvision_dataset(train=True)
        self.torchvision_dataset(train=False)

    def torchvision_dataset(self, train: bool) -> Any:
        """torchvision's dataset object for the train or test split (extracted into the cache if need be)."""
        extract_dir = self.extract_dir(Path(self.data_dir))
        if writable(extract_dir):
            extract_dir.mkdir(parents=True, exist_ok=True)
            with FileLock(str(extract_dir / ".sparse_lab-extract.lock")):  # parallel runs extract once
                try:
                    return self._load(Path(self.data_dir), train)
                except DataNotFoundError:
                    raise
                except Exception as exc:  # e.g. a truncated file torchvision extracted
                    raise self._not_found(
                        f"the extracted files under {extract_dir} fail to load ({type(exc).__name__}: {exc}); an "
                        "extraction cut short leaves them so: delete them, keeping the archives, and run again"
                    ) from exc
        try:  # a read-only folder that already holds the extracted files needs no cache
            return self.dataset_cls(self.data_dir, train=train, download=False)
        except RuntimeError:
            pass
        root = self.cache_root()
        if not writable(root):
            raise self._not_found(
                f"data_dir is read-only, and so is the cache dir cache_dir={self.cache_dir!r} where its archives "
                "would be extracted: make SPARSE_LAB_CACHE=/path or data.cache_dir=/path a writable folder"
            )
        root.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root) + ".lock"):
            try:
                return self.dataset_cls(str(root), train=train, download=False)
            except Exception:  # not extracted yet, or an extraction cut short: start afresh
                shutil.rmtree(root, ignore_errors=True)
            return self._load(root, train, link=True)

    def _load(self, root: Path, train: bool, link: bool = False) -> Any:
        """torchvision's dataset under ``root``, extracting (or downloading) with ``download=True``;
        ``link``: first link ``data_dir``'s archives into ``root`` (the cache)."""
        try:
            return self.dataset_cls(str(root), train=train, download=False)
        except RuntimeError:
            if not self.download:
                raise self._not_found("download disabled (data.download=false)") from None
        if link:
            self._link_archives(root)
        try:
            return self.dataset_cls(str(root), train=train, download=True)
        except Exception as exc:  # network errors, bad checksums, truncated archives
            where = f" (extracting into the cache {root})" if link else ""
            raise self._not_found(f"download failed{where}: {type(exc).__name__}: {exc}") from None

    def _link_archives(self, root: Path) -> None:
        """Symlink every archive found under ``data_dir`` to the same place under ``root``; copy it
        where the file system refuses links. torchvision's md5 check reads through the link."""
        for source, _ in self.expected_files():
            target = root / source.relative_to(self.data_dir)
            if not source.is_file() or (target.exists() and not target.is_symlink()):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
            try:
                target.symlink_to(source.resolve())
            except OSError:
                shutil.copyfile(source, target)

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
            "Fix: copy the original archives there, "
            "or point to a folder that has them with SPARSE_LAB_DATA=/path or data.data_dir=/path (it may be read-only), "
            "or allow network access so torchvision can download them."
        )


class MNISTDataModule(TorchvisionDataModule):
    """MNIST: 60,000 train / 10,000 test, 1x28x28."""

    dataset_cls = datasets.MNIST
    train_samples = 60_000  # the training split, known before loading (config checks)
    input_shape = (1, 28, 28)
    num_classes = 10
    mean = (0.1307,)
    std = (0.3081,)

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        ds = self.torchvision_dataset(train)
        return ds.data.unsqueeze(1).contiguous(), ds.targets.long()


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST: same layout as MNIST."""

    dataset_cls = datasets.FashionMNIST
    mean = (0.2860,)
    std = (0.3530,)


class CIFAR10DataModule(TorchvisionDataModule):
    """CIFAR-10: 50,000 train / 10,000 test, 3x32x32; optional crop+flip augmentation on device."""

    dataset_cls = datasets.CIFAR10
    train_samples = 50_000
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

    def extract_dir(self, root: Path) -> Path:
        return root  # the .tar.gz lies in the data root, and cifar-10-batches-py/ is extracted beside it

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        ds = self.torchvision_dataset(train)
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return images, torch.as_tensor(ds.targets, dtype=torch.long)
