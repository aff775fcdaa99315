"""Data modules: shapes, dtypes, normalization, deterministic splits and order, clear errors."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.utils as tv_utils
from torchvision import datasets
from torchvision.datasets.utils import calculate_md5

from sparse_lab.data import (
    BatchAugment,
    CIFAR10DataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
    RandomCropWithPadding,
    RandomHorizontalFlip,
    SyntheticDataModule,
    TensorBatchLoader,
    TorchvisionDataModule,
)
from sparse_lab.data.torchvision_sets import writable
from sparse_lab.errors import ConfigError, DataNotFoundError
from tests.conftest import SHARED_DATASETS, make_cfg


def synthetic(**kw) -> SyntheticDataModule:
    dm = SyntheticDataModule(**{"train_size": 200, "test_size": 50, "val_size": 40, **kw})
    dm.setup()
    return dm


def test_synthetic_splits_are_uint8_tensors_of_the_declared_shape() -> None:
    dm = synthetic(shape=(3, 32, 32))
    images, labels = dm.splits["train"]
    assert images.dtype == torch.uint8 and images.shape == (160, 3, 32, 32)
    assert labels.dtype == torch.int64 and labels.shape == (160,)
    assert dm.splits["val"][0].shape == (40, 3, 32, 32)
    assert dm.splits["test"][0].shape == (50, 3, 32, 32)
    assert set(labels.tolist()) == set(range(10))


def test_synthetic_data_do_not_depend_on_the_run_seed() -> None:
    a, b = synthetic(seed=0), synthetic(seed=5)
    assert torch.equal(a.splits["train"][0], b.splits["train"][0])
    assert torch.equal(a.splits["test"][1], b.splits["test"][1])


def test_split_is_deterministic_disjoint_and_complete() -> None:
    a, b, c = synthetic(split_seed=0), synthetic(split_seed=0), synthetic(split_seed=1)
    assert torch.equal(a.splits["val"][0], b.splits["val"][0])
    assert not torch.equal(a.splits["val"][0], c.splits["val"][0])
    whole = SyntheticDataModule(train_size=200, test_size=50).load_split(train=True)[0]
    joined = torch.cat([a.splits["train"][0], a.splits["val"][0]])
    rows = lambda t: sorted(map(bytes, t.flatten(1).numpy()))  # noqa: E731
    assert rows(joined) == rows(whole)


def test_val_size_zero_trains_on_everything_and_too_large_is_an_error() -> None:
    dm = synthetic(val_size=0)
    assert len(dm.splits["train"][0]) == 200 and "val" not in dm.splits
    with pytest.raises(ConfigError, match="val_size=200"):
        synthetic(val_size=200)


def test_val_loader_names_follow_the_options() -> None:
    assert synthetic(val_size=10, test_each_epoch=True).val_loader_names == ["val", "test"]
    assert synthetic(val_size=0, test_each_epoch=True).val_loader_names == ["test"]
    assert synthetic(val_size=0, test_each_epoch=False).val_loader_names == []


def test_normalize_maps_pixels_exactly() -> None:
    dm = MNISTDataModule(data_dir="unused")
    x = torch.tensor([0.0, 255.0]).view(2, 1, 1, 1)
    out = dm.normalize(x).flatten()
    assert out[0].item() == pytest.approx(-0.1307 / 0.3081, abs=1e-6)
    assert out[1].item() == pytest.approx((1 - 0.1307) / 0.3081, abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_batch_conversion_leaves_the_loaded_images_untouched(dtype: torch.dtype) -> None:
    """The conversion normalizes its own float copy in place; float images (no copy) are left as
    they are, so a second pass over the same batch gives the same inputs."""
    dm = MNISTDataModule(data_dir="unused")
    images = torch.randint(0, 256, (4, 1, 28, 28), generator=torch.Generator().manual_seed(0)).to(dtype)
    before = images.clone()
    first = dm.on_after_batch_transfer((images, torch.zeros(4, dtype=torch.long)), 0)[0]
    second = dm.on_after_batch_transfer((images, torch.zeros(4, dtype=torch.long)), 0)[0]
    assert torch.equal(images, before) and torch.equal(first, second)
    assert torch.allclose(first, dm.normalize(images.float()), atol=1e-6) and first.dtype == torch.float32


def test_standardize_false_only_scales_pixels_to_the_unit_interval() -> None:
    dm = MNISTDataModule(data_dir="unused", standardize=False)  # torchvision's ToTensor, no Normalize
    x = torch.tensor([0.0, 51.0, 255.0]).view(3, 1, 1, 1)
    assert torch.allclose(dm.normalize(x).flatten(), torch.tensor([0.0, 0.2, 1.0]), atol=1e-7)


def test_given_statistics_replace_the_data_sets_own() -> None:
    from sparse_lab.errors import ConfigError

    x = torch.tensor([0.0, 127.5, 255.0]).view(3, 1, 1, 1)
    half = FashionMNISTDataModule(data_dir="unused", mean=[0.5], std=[0.5])  # torchvision's Normalize((0.5,), (0.5,))
    assert torch.allclose(half.normalize(x).flatten(), torch.tensor([-1.0, 0.0, 1.0]), atol=1e-6)
    own = FashionMNISTDataModule(data_dir="unused")
    assert own.normalize(x).flatten()[0].item() == pytest.approx(-0.2860 / 0.3530, abs=1e-6)
    assert synthetic(mean=[0.2], std=[0.4]).normalize(x).flatten()[0].item() == pytest.approx(-0.5, abs=1e-6)
    with pytest.raises(ConfigError, match=r"data.mean=\[0.5, 0.5\] is invalid: it must be 1 number"):
        MNISTDataModule(data_dir="unused", mean=[0.5, 0.5])
    with pytest.raises(ConfigError, match="each > 0"):
        MNISTDataModule(data_dir="unused", std=[0.0])


def test_batches_are_converted_to_normalized_float() -> None:
    dm = synthetic()
    x, y = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.dtype == torch.float32 and x.shape == (128, 1, 28, 28) and y.dtype == torch.int64
    raw = dm.splits["train"][0].float()
    expected = (raw / 255 - 0.5) / 0.25
    assert x.min() >= expected.min() - 1e-5 and x.max() <= expected.max() + 1e-5


def test_loader_visits_every_sample_once_per_epoch_in_a_seeded_order() -> None:
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    labels = torch.arange(10)
    loader = TensorBatchLoader(images, labels, batch_size=4, shuffle=True, seed=3)
    assert len(loader) == 3
    epoch0 = torch.cat([y for _, y in loader])
    assert sorted(epoch0.tolist()) == list(range(10))
    again = torch.cat([y for _, y in TensorBatchLoader(images, labels, 4, shuffle=True, seed=3)])
    assert torch.equal(epoch0, again)
    loader.sampler.set_epoch(1)
    epoch1 = torch.cat([y for _, y in loader])
    assert sorted(epoch1.tolist()) == list(range(10)) and not torch.equal(epoch0, epoch1)
    for x, y in loader:
        assert torch.equal(x.flatten().long(), y)  # images and labels stay paired


def test_loader_drop_last_and_unshuffled_order() -> None:
    images, labels = torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.arange(10)
    assert len(TensorBatchLoader(images, labels, 4, drop_last=True)) == 2
    assert torch.cat([y for _, y in TensorBatchLoader(images, labels, 4)]).tolist() == list(range(10))


def test_missing_data_names_the_dir_the_files_and_the_fix(tmp_path: Path) -> None:
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(DataNotFoundError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert str(tmp_path) in message
    for name, _ in datasets.MNIST.resources:
        assert name in message
    assert "missing" in message and "SPARSE_LAB_DATA" in message and "data.data_dir" in message


def test_corrupt_archive_is_reported_as_corrupt(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, _ in datasets.MNIST.resources:
        with gzip.open(raw / name, "wb") as f:
            f.write(b"not mnist")
    with pytest.raises(DataNotFoundError, match="corrupt"):
        MNISTDataModule(data_dir=str(tmp_path), download=False).prepare_data()


# ---- CIFAR-10: the real archive cannot be had here, so build one in torchvision's format ----


def _fake_cifar(root: Path, n_train: int = 20, n_test: int = 10) -> type:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(name: str, n: int) -> list[str]:
        data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
        labels = (np.arange(n) % 10).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
        return [name, calculate_md5(str(folder / name))]

    train_list = [batch(f"data_batch_{i}", n_train // 5) for i in range(1, 6)]
    test_list = [batch("test_batch", n_test)]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)
    meta = {"filename": "batches.meta", "key": "label_names", "md5": calculate_md5(str(folder / "batches.meta"))}
    return type("FakeCIFAR10", (datasets.CIFAR10,), {"train_list": train_list, "test_list": test_list, "meta": meta})


def test_cifar10_loads_as_nchw_uint8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_cifar(tmp_path)
    monkeypatch.setattr(CIFAR10DataModule, "dataset_cls", fake)
    dm = CIFAR10DataModule(data_dir=str(tmp_path), download=False, val_size=5)
    dm.setup()
    images, labels = dm.splits["train"]
    assert images.shape == (15, 3, 32, 32) and images.dtype == torch.uint8
    assert dm.splits["test"][0].shape == (10, 3, 32, 32)
    # HWC -> CHW: pixel (c, h, w) of sample 0 is data[c * 1024 + h * 32 + w] of the pickled row
    ds = fake(str(tmp_path), train=False, download=False)
    test_images = dm.splits["test"][0]
    assert torch.equal(test_images[0].permute(1, 2, 0), torch.from_numpy(ds.data[0]))


def test_cifar10_missing_archive_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="cifar-10-python.tar.gz"):
        CIFAR10DataModule(data_dir=str(tmp_path), download=False).prepare_data()


# ---- read-only archive folders: torchvision extracts into a cache instead ----


def _fake_mnist(root: Path, seed: int = 0, n_train: int = 30, n_test: int = 10, md5: bool = True) -> type:
    """MNIST archives in torchvision's format (gzipped idx files) under ``root/MNIST/raw``, and an MNIST
    class whose md5 sums match them (``md5=False``: none, any content passes) and whose mirror is a
    missing local folder (no network)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    resources = []
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, array, magic in (("images-idx3", images, 0x0803), ("labels-idx1", labels, 0x0801)):
            name = f"{split}-{kind}-ubyte.gz"
            with gzip.GzipFile(raw / name, "wb", mtime=0) as f:
                f.write(np.array([magic, *array.shape], dtype=">i4").tobytes() + array.tobytes())
            resources.append((name, calculate_md5(str(raw / name)) if md5 else None))
    nowhere = (root.parent / "no-mirror").as_uri() + "/"
    return type("MNIST", (datasets.MNIST,), {"resources": resources, "mirrors": [nowhere]})


def _fake_cifar_archive(root: Path) -> type:
    """``root/cifar-10-python.tar.gz`` holding the batches of :func:`_fake_cifar`, and its class."""
    staging = root.parent / f"{root.name}-staging"
    fake = _fake_cifar(staging)
    root.mkdir(parents=True)
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(staging / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    shutil.rmtree(staging)
    md5 = calculate_md5(str(root / "cifar-10-python.tar.gz"))
    return type("FakeCIFAR10", (fake,), {"tgz_md5": md5, "url": (root.parent / "no-mirror.tar.gz").as_uri()})


ARCHIVES: dict[str, tuple[Callable[[Path], type], type[TorchvisionDataModule]]] = {
    "mnist": (_fake_mnist, MNISTDataModule),
    "cifar10": (_fake_cifar_archive, CIFAR10DataModule),
}


@pytest.fixture
def read_only() -> Iterator[Callable[[Path], Path]]:
    """``chmod -R a-w`` a folder; write permission comes back at teardown so pytest can remove it."""
    done: list[Path] = []

    def make(path: Path) -> Path:
        for p in [path, *path.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
        done.append(path)
        return path

    yield make
    for path in done:
        for p in [path, *path.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)


@pytest.fixture
def extractions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The archives torchvision extracts during the test (its ``extract_archive``, counted)."""
    calls: list[str] = []
    original = tv_utils.extract_archive

    def counting(from_path, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(str(from_path))
        return original(from_path, *args, **kwargs)

    monkeypatch.setattr(tv_utils, "extract_archive", counting)
    return calls


def _tree(root: Path) -> dict[str, int]:
    """Every path below ``root`` with its mtime (of the link itself for a symlink)."""
    return {str(p.relative_to(root)): os.lstat(p).st_mtime_ns for p in root.rglob("*")}


def _load(cls: type[TorchvisionDataModule], data_dir: Path, cache: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    dm = cls(data_dir=str(data_dir), cache_dir=str(cache), val_size=5)
    dm.prepare_data()
    dm.setup()
    return dm.splits


def _same(a: dict[str, tuple[torch.Tensor, torch.Tensor]], b: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(x, y) for k in a for x, y in zip(a[k], b[k]))


@pytest.mark.parametrize("kind", ["mnist", "cifar10"])
def test_read_only_archives_load_through_the_cache_like_a_writable_copy(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_only: Callable[[Path], Path], extractions: list[str]
) -> None:
    build, dm_cls = ARCHIVES[kind]
    monkeypatch.setattr(dm_cls, "dataset_cls", build(tmp_path / "archives"))
    n_archives = 4 if kind == "mnist" else 1
    cache = tmp_path / "cache"

    copy = shutil.copytree(tmp_path / "archives", tmp_path / "writable")
    expected = _load(dm_cls, copy, cache)
    assert len(extractions) == n_archives and not cache.exists()  # writable: extracted beside the archives

    shared = read_only(shutil.copytree(tmp_path / "archives", tmp_path / "shared"))
    assert not writable(shared)
    before = _tree(shared)
    assert _same(_load(dm_cls, shared, cache), expected)
    assert _tree(shared) == before  # nothing written beside the read-only archives
    assert len(extractions) == 2 * n_archives
    (entry,) = [p for p in (cache / "data").iterdir() if p.is_dir()]
    assert entry.name.startswith("shared-")
    links = [p for p in entry.rglob("*.gz") if p.is_symlink()]
    assert len(links) == n_archives and all(p.resolve().is_relative_to(shared) for p in links)

    extracted = _tree(entry)
    assert _same(_load(dm_cls, shared, cache), expected)  # a second load reuses the cache
    assert len(extractions) == 2 * n_archives and _tree(entry) == extracted


def test_two_read_only_folders_of_the_same_name_get_separate_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_only: Callable[[Path], Path], extractions: list[str]
) -> None:
    a, b = tmp_path / "a" / "data", tmp_path / "b" / "data"
    monkeypatch.setattr(MNISTDataModule, "dataset_cls", _fake_mnist(a, seed=0, md5=False))
    _fake_mnist(b, seed=1, md5=False)
    read_only(a), read_only(b)
    cache = tmp_path / "cache"
    first, second = _load(MNISTDataModule, a, cache), _load(MNISTDataModule, b, cache)
    assert not torch.equal(first["train"][0], second["train"][0])
    assert _same(_load(MNISTDataModule, a, cache), first)
    assert len(extractions) == 8 and len([p for p in (cache / "data").iterdir() if p.is_dir()]) == 2


def test_a_cut_short_extraction_in_the_cache_is_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_only: Callable[[Path], Path], extractions: list[str]
) -> None:
    monkeypatch.setattr(MNISTDataModule, "dataset_cls", _fake_mnist(tmp_path / "archives"))
    shared, cache = read_only(tmp_path / "archives"), tmp_path / "cache"
    expected = _load(MNISTDataModule, shared, cache)
    (images,) = (cache / "data").glob("*/MNIST/raw/train-images-idx3-ubyte")
    images.write_bytes(images.read_bytes()[:1000])  # as if the run was killed while extracting
    assert _same(_load(MNISTDataModule, shared, cache), expected)
    assert len(extractions) == 8


def test_parallel_runs_extract_a_writable_data_dir_once_and_never_read_half_written_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four loaders start 0.3 s apart on fresh archives in a writable folder (a parallel sweep's first
    runs; threads here, which take the file lock as processes do): the first extracts, the others wait
    for it. Each extraction first writes half of its file and pauses, as a large one does. Without the
    lock a later loader, finding files missing, extracted again over files an earlier one was reading:
    on an H200, one of 14 runs started together read a half-written file."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(MNISTDataModule, "dataset_cls", _fake_mnist(tmp_path / "data"))
    original = tv_utils.extract_archive

    def slow(from_path, to_path=None, remove_finished=False):  # type: ignore[no-untyped-def]
        target = Path(to_path or Path(from_path).parent) / Path(from_path).name.removesuffix(".gz")
        with gzip.open(from_path, "rb") as f:
            content = f.read()
        target.write_bytes(content[: len(content) // 2])
        time.sleep(0.2)
        return original(from_path, to_path, remove_finished)

    monkeypatch.setattr(tv_utils, "extract_archive", slow)

    def load(i: int) -> str:
        time.sleep(0.3 * i)
        try:
            splits = _load(MNISTDataModule, tmp_path / "data", tmp_path / "cache")
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return str(int(splits["train"][0].sum()) + int(splits["test"][0].sum()))

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(load, range(4)))
    assert len(set(outcomes)) == 1 and outcomes[0].isdigit(), outcomes


def test_a_cut_short_extraction_in_a_writable_data_dir_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MNISTDataModule, "dataset_cls", _fake_mnist(tmp_path / "data"))
    _load(MNISTDataModule, tmp_path / "data", tmp_path / "cache")
    images = tmp_path / "data" / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:10])  # as if the run was killed while extracting
    with pytest.raises(DataNotFoundError, match="cut short") as err:
        _load(MNISTDataModule, tmp_path / "data", tmp_path / "cache")
    assert "delete them, keeping the archives" in str(err.value) and str(images.parent) in str(err.value)


def test_md5_is_still_checked_through_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_only: Callable[[Path], Path]
) -> None:
    monkeypatch.setattr(MNISTDataModule, "dataset_cls", _fake_mnist(tmp_path / "archives"))
    with gzip.open(tmp_path / "archives" / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"not mnist")
    shared = read_only(tmp_path / "archives")
    with pytest.raises(DataNotFoundError, match="corrupt") as err:
        _load(MNISTDataModule, shared, tmp_path / "cache")
    assert "train-labels-idx1-ubyte.gz  [corrupt" in str(err.value)


def test_read_only_data_and_cache_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_only: Callable[[Path], Path]
) -> None:
    monkeypatch.setattr(MNISTDataModule, "dataset_cls", _fake_mnist(tmp_path / "archives"))
    shared = read_only(tmp_path / "archives")
    cache = tmp_path / "cache"
    cache.mkdir()
    read_only(cache)
    with pytest.raises(DataNotFoundError) as err:
        _load(MNISTDataModule, shared, cache)
    message = str(err.value)
    assert str(shared) in message and str(cache) in message and "read-only" in message
    assert "SPARSE_LAB_CACHE" in message and "data.cache_dir" in message
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("data", ["mnist", "fashion_mnist", "cifar10"])
def test_config_cache_dir_follows_sparse_lab_cache(data: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra.utils import instantiate

    monkeypatch.setenv("SPARSE_LAB_CACHE", str(tmp_path / "cache"))
    assert instantiate(make_cfg(tmp_path, f"data={data}").data).cache_dir == str(tmp_path / "cache")
    monkeypatch.delenv("SPARSE_LAB_CACHE")
    assert instantiate(make_cfg(tmp_path, f"data={data}").data).cache_dir == str(Path("~/.cache/sparse_lab").expanduser())


@pytest.mark.real_data
@pytest.mark.parametrize("cls", [MNISTDataModule, FashionMNISTDataModule])
def test_real_archives_load_from_the_read_only_shared_folder(cls: type[TorchvisionDataModule], tmp_path: Path) -> None:
    raw = SHARED_DATASETS / cls.dataset_cls.__name__ / "raw"
    if not raw.is_dir():
        pytest.skip(f"{raw} not found")
    if writable(raw):
        pytest.skip(f"{raw} is writable here; this test is about a read-only copy")
    before = _tree(SHARED_DATASETS)
    dm = cls(data_dir=str(SHARED_DATASETS), cache_dir=str(tmp_path / "cache"))
    dm.prepare_data()
    dm.setup()
    images, labels = dm.splits["train"]
    assert images.shape == (60000, 1, 28, 28) and images.dtype == torch.uint8
    assert dm.splits["test"][0].shape == (10000, 1, 28, 28)
    counts = torch.bincount(labels)
    assert len(counts) == 10 and bool((counts >= 5000).all())
    assert _tree(SHARED_DATASETS) == before


# ---- batched augmentation ----


def test_random_crop_is_a_shifted_window_of_the_padded_image() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    out = RandomCropWithPadding(2)(x, gen)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(2):
        windows = [padded[b, :, i : i + 8, j : j + 8] for i in range(5) for j in range(5)]
        assert any(torch.equal(out[b], w) for w in windows)
    assert torch.equal(RandomCropWithPadding(0)(x, gen), x)


def test_flip_probability_one_mirrors_every_sample() -> None:
    x = torch.rand(4, 3, 5, 5)
    assert torch.equal(RandomHorizontalFlip(1.0)(x, torch.Generator()), x.flip(-1))
    assert torch.equal(RandomHorizontalFlip(0.0)(x, torch.Generator()), x)


def test_augmentation_is_deterministic_under_a_seed_and_varies_per_sample() -> None:
    x = torch.rand(64, 3, 32, 32) * 255
    a = BatchAugment(RandomCropWithPadding(4), RandomHorizontalFlip(), seed=1)(x)
    b = BatchAugment(RandomCropWithPadding(4), RandomHorizontalFlip(), seed=1)(x)
    c = BatchAugment(RandomCropWithPadding(4), RandomHorizontalFlip(), seed=2)(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    changed = [(not torch.equal(a[i], x[i])) for i in range(64)]
    assert 0 < sum(changed) <= 64


def test_reference_cifar_augmentations_keep_shape_range_and_are_seeded() -> None:
    from sparse_lab.data import ColorJitter, RandomErasing, RandomRotation

    x = torch.rand(16, 3, 32, 32) * 255
    for t in (RandomRotation(15), ColorJitter(0.2, 0.2, 0.2, 0.1), RandomErasing(1.0, fill=(1.0, 2.0, 3.0))):
        a, b = t(x, torch.Generator().manual_seed(0)), t(x, torch.Generator().manual_seed(0))
        assert a.shape == x.shape and torch.equal(a, b)
        assert a.min() >= 0 and a.max() <= 255 + 1e-3
    zero = RandomRotation(0)(x, torch.Generator())
    assert torch.allclose(zero, x, atol=1e-3)  # no angle, no change
    erased = RandomErasing(1.0, fill=(1.0, 2.0, 3.0))(x, torch.Generator().manual_seed(1))
    for i in range(16):  # exactly one rectangle per sample holds the fill
        region = (erased[i, 0] == 1.0) & (erased[i, 1] == 2.0) & (erased[i, 2] == 3.0)
        ys, xs = region.nonzero(as_tuple=True)
        assert len(ys) == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    assert torch.equal(RandomErasing(0.0)(x, torch.Generator()), x)
    jitter = ColorJitter(0, 0, 0, 0)(x, torch.Generator())
    assert torch.allclose(jitter, x, atol=1e-3)
