"""Epoch times of ``full``, ``rw_target`` and ``progressive`` on MNIST and CIFAR-10, on one device.

Written for a GPU (``--hardware gpu``, the default), to be run in one call where a GPU is lent.
Every run goes through the app (``sparse_lab.app.train``) in this process, one after
the other, for ``--epochs`` epochs (default 2: the first one includes cuDNN autotuning and
allocator warm-up); the training time and peak CUDA memory of each epoch come from the run's
``metrics.json``.

Runs (the README's MNIST commands on a GPU, and their CIFAR-10 counterparts)::

    mnist   full                    MLP 784-256-128-10, batch 128, Adam 1e-3
    mnist   rw_target paths=1000    the same MLP
    mnist   progressive sparsity=0.9  the same MLP
    cifar10 full                    MLP 3072-256-128-10, batch 128, crop + flip on device
    cifar10 rw_target paths=1000    the same MLP
    cifar10 progressive             experiment=progressive_cifar10: ResNet-18, SGD, reference augmentation

CIFAR-10 is read from its archive when ``$SPARSE_LAB_DATA/cifar-10-python.tar.gz`` exists.
Otherwise (no network on this project's machines) the runs use CIFAR-10-*shaped* data: the same
``CIFAR10DataModule`` (50,000 / 10,000 uint8 images of 3x32x32, the same split, augmentation and
normalization on the device) whose images are random pixels. An epoch's time depends on the
shapes, not on the pixel values; the accuracies of such runs mean nothing, and the JSON says
which data each run used.

Usage::

    python benchmarks/gpu_epoch_times.py [--hardware gpu|cpu] [--epochs 2] [--datasets mnist,cifar10]
        [--runs full,rw_target,progressive] [--set KEY=VALUE ...] [--quick] [--out FILE]

``--quick`` is a smoke test for machines without a GPU: two batches an epoch, a width-8 ResNet.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import save_result  # noqa: E402

from sparse_lab.app import CONFIG_DIR, train  # noqa: E402
from sparse_lab.data import CIFAR10DataModule  # noqa: E402

RUNS: dict[str, dict[str, list[str]]] = {
    "mnist": {
        "full": ["method=full"],
        "rw_target": ["method=rw_target", "paths=1000"],
        "progressive": ["method=progressive", "sparsity=0.9"],
    },
    "cifar10": {
        "full": ["data=cifar10", "method=full"],
        "rw_target": ["data=cifar10", "method=rw_target", "paths=1000"],
        "progressive": ["experiment=progressive_cifar10"],
    },
}
QUICK = ["+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1"]


class CIFAR10ShapedDataModule(CIFAR10DataModule):
    """``CIFAR10DataModule`` over random uint8 images of CIFAR-10's sizes: no archive needed."""

    def prepare_data(self) -> None:
        pass

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        n = 50_000 if train else 10_000
        gen = torch.Generator().manual_seed(0 if train else 1)
        images = torch.randint(0, 256, (n, *self.input_shape), generator=gen, dtype=torch.uint8)
        return images, torch.randint(0, self.num_classes, (n,), generator=gen)


def run_config(dataset: str, run: str, args: argparse.Namespace, out_dir: str) -> tuple[Any, str]:
    overrides = [*RUNS[dataset][run], f"hardware={args.hardware}", f"epochs={args.epochs}", "seed=0"]
    overrides += [f"output_dir={out_dir}", "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false"]
    if args.quick:
        overrides += QUICK + (["model.width=8"] if run == "progressive" and dataset == "cifar10" else [])
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, *args.set])
    data = dataset
    # The archive where the run's own data_dir (default $SPARSE_LAB_DATA) would read it.
    if dataset == "cifar10" and not (Path(cfg.data.data_dir).expanduser() / CIFAR10DataModule.dataset_cls.filename).exists():
        cfg.data._target_ = f"{__name__}.{CIFAR10ShapedDataModule.__name__}"
        data = "cifar10-shaped random images"
    return cfg, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hardware", default="gpu")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--datasets", default="mnist,cifar10")
    parser.add_argument("--runs", default="full,rw_target,progressive")
    parser.add_argument("--set", action="append", default=[], help="a further override for every run")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 batches an epoch")
    parser.add_argument("--out", default="benchmarks/results/gpu_epoch_times.json")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="sparse_lab_gpu_epochs_")
    results: dict[str, dict[str, Any]] = {}
    for dataset in args.datasets.split(","):
        for run in args.runs.split(","):
            cfg, data = run_config(dataset, run, args, f"{tmp}/{dataset}_{run}")
            start = time.perf_counter()
            train(cfg)
            record = json.loads((Path(cfg.output_dir) / "metrics.json").read_text())
            epochs = record["epochs"]
            results[f"{dataset}/{run}"] = {
                "overrides": RUNS[dataset][run],
                "data": data,
                "train_time_s": [e["train_time_s"] for e in epochs],
                "steps_per_epoch": epochs[0]["step"],
                "ms_per_step_last_epoch": 1e3 * epochs[-1]["train_time_s"] / epochs[0]["step"],
                "train_peak_cuda_mb": [e.get("train_peak_cuda_mb") for e in epochs],
                "test_acc": record.get("test", {}).get("test/acc"),
                "process_s": time.perf_counter() - start,
            }
            print(f"{dataset}/{run}: train time per epoch {results[f'{dataset}/{run}']['train_time_s']}", flush=True)

    result = {
        "benchmark": "gpu_epoch_times",
        "hardware": args.hardware,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or platform.machine(),
        "epochs": args.epochs,
        "quick": args.quick,
        "extra_overrides": args.set,
        "runs": results,
        "median_train_time_s": {k: statistics.median(v["train_time_s"]) for k, v in results.items()},
        "torch": torch.__version__,
    }
    save_result(result, args.out, ("device", "median_train_time_s"))


if __name__ == "__main__":
    main()
