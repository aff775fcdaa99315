"""One training epoch of ``method=full`` through sparse_lab against a plain PyTorch loop.

Both use the same MLP (784-256-128-10), the same uint8 data tensors in memory, batch 128 and
Adam 1e-3 (fused), in the same process, interleaved ``--repeats`` times; the ratio of medians is printed
and saved as JSON. Usage::

    python benchmarks/epoch_time.py [--repeats 5] [--data mnist|synthetic] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from torch import nn

from sparse_lab.app import CONFIG_DIR, train
from results_io import save_result


def default_data() -> str:
    """``mnist`` when its archives are under ``$SPARSE_LAB_DATA`` (default ``./data``), else ``synthetic``."""
    root = os.environ.get("SPARSE_LAB_DATA", "./data")
    return "mnist" if (Path(root) / "MNIST" / "raw").exists() else "synthetic"


def framework_config(data: str, out_dir: str, extra: list[str]) -> object:
    overrides = [f"output_dir={out_dir}", "epochs=1", "hardware=cpu", "seed=0"]
    if data == "synthetic":
        overrides += ["data=synthetic", "data.train_size=60000", "data.test_size=10000", "data.val_size=0"]
    overrides += ["data.test_each_epoch=false", *extra]
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=overrides)


def run_framework(cfg: object) -> tuple[float, float]:
    """Return (training-epoch time, whole fit+test wall time) of one framework run."""
    t0 = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - t0
    record = json.loads((Path(cfg.output_dir) / "metrics.json").read_text())
    return record["epochs"][0]["train_time_s"], wall


def run_plain(images: torch.Tensor, labels: torch.Tensor, mean: float, std: float, seed: int) -> float:
    """The plain loop: slice, normalize, forward, loss, backward, Adam step."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)  # as conf/method/full.yaml
    batch = 128
    t0 = time.perf_counter()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    for i in range(0, len(images), batch):
        idx = order[i : i + batch]
        x = (torch.index_select(images, 0, idx).float() / 255 - mean) / std  # the gather sparse_lab's loader uses
        loss = nn.functional.cross_entropy(model(x), torch.index_select(labels, 0, idx))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data", choices=["mnist", "synthetic"], default=None, help="default: mnist if present")
    parser.add_argument("--out", default="benchmarks/results/epoch_time.json")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for the framework run")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="sparse_lab_bench_")
    data = args.data or default_data()
    cfg = framework_config(data, f"{tmp}/run", args.overrides)

    # The plain loop gets exactly the framework's data tensors.
    from hydra.utils import instantiate

    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    images, labels = dm.splits["train"]
    mean, std = dm.mean[0], dm.std[0]

    plain, fw_epoch, fw_wall = [], [], []
    for r in range(args.repeats):
        plain.append(run_plain(images, labels, mean, std, seed=r))
        epoch_s, wall_s = run_framework(cfg)
        fw_epoch.append(epoch_s)
        fw_wall.append(wall_s)
        print(f"repeat {r}: plain {plain[-1]:.3f}s  sparse_lab epoch {epoch_s:.3f}s  (fit+test {wall_s:.2f}s)", flush=True)

    result = {
        "benchmark": "epoch_time",
        "data": data,
        "train_images": len(images),
        "batch_size": 128,
        "repeats": args.repeats,
        "plain_epoch_s": plain,
        "framework_epoch_s": fw_epoch,
        "framework_fit_and_test_wall_s": fw_wall,
        "median_plain_s": statistics.median(plain),
        "median_framework_s": statistics.median(fw_epoch),
        "ratio": statistics.median(fw_epoch) / statistics.median(plain),
        "ratio_median_of_pairs": statistics.median(f / p for f, p in zip(fw_epoch, plain)),
        "target_ratio": 1.4,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "overrides": args.overrides,
    }
    save_result(result, args.out, ("data", "median_plain_s", "median_framework_s", "ratio", "ratio_median_of_pairs"))


if __name__ == "__main__":
    main()
