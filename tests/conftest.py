"""Shared fixtures: configs composed with Hydra's compose(), short trainers, real-data discovery."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from sparse_lab.app import CONFIG_DIR

REPO = Path(__file__).resolve().parent.parent
SHARED_DATASETS = REPO.parent / "shared" / "datasets"

# Fast settings for tests: synthetic data, CPU, no progress bar.
FAST = ["data=synthetic", "hardware=cpu", "epochs=1", "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false"]


def make_cfg(out_dir: Path | str, *overrides: str, fast: bool = True) -> DictConfig:
    """Compose the app config with ``output_dir`` set, as a run would see it."""
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=[f"output_dir={out_dir}", *(FAST if fast else []), *overrides])


def _has_mnist_family(root: Path) -> bool:
    return all((root / name / "raw").is_dir() for name in ("MNIST", "FashionMNIST"))


@pytest.fixture(scope="session")
def real_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dir with the real MNIST / Fashion-MNIST archives, or skip.

    Uses $SPARSE_LAB_DATA when it has them (CI points it at ../shared/datasets, read-only: the data
    modules extract into $SPARSE_LAB_CACHE), else a writable temporary copy of ../shared/datasets.
    """
    env = os.environ.get("SPARSE_LAB_DATA")
    if env and _has_mnist_family(Path(env)):
        return Path(env)
    if _has_mnist_family(SHARED_DATASETS):
        dest = tmp_path_factory.mktemp("datasets")
        shutil.copytree(SHARED_DATASETS, dest, dirs_exist_ok=True)
        for path in dest.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        return dest
    pytest.skip("real MNIST archives not found (set SPARSE_LAB_DATA or provide ../shared/datasets)")
