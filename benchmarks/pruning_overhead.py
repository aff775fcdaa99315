"""Progressive pruning against dense training of the same model: training step time.

One epoch each of ``method=full`` and ``method=progressive sparsity=0.9`` (pruned to 90% at the
start of that epoch; the MaskSet masks the gradients before every optimizer step and the weights after it, and
costs nothing in the forward pass), interleaved ``--repeats`` times in the same process; ratio of
the median epoch times. Also RigL against the same static sparse run (``method=random``, ERK masks
fixed from the first step; RigL starts from the same masks and moves them every 100 steps). Usage::

    python benchmarks/pruning_overhead.py [--repeats 5] [--data mnist|synthetic] [--model mlp|resnet18] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import save_result  # noqa: E402
from epoch_time import default_data, framework_config, run_framework  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data", choices=["mnist", "synthetic"], default=None, help="default: mnist if present")
    parser.add_argument("--model", default="mlp", help="a model config name; resnet18 runs at model.width=8")
    parser.add_argument("--out", default="benchmarks/results/pruning_overhead.json")
    args = parser.parse_args()
    data = args.data or default_data()
    model = [f"model={args.model}"] + (["model.width=8", "+trainer.limit_train_batches=100"] if args.model == "resnet18" else [])
    # Pruned to 90% at the start of the measured epoch (OneShotAt epoch 0), so the epoch trains the sparse net.
    at_once = ["method.callbacks.pruner.schedule._target_=sparse_lab.sparsity.OneShotAtSchedule",
               "~method.callbacks.pruner.schedule.epochs", "+method.callbacks.pruner.schedule.at=0"]
    variants = {
        "dense": ["method=full", *model],
        "progressive": ["method=progressive", "sparsity=0.9", *at_once, *model],
        "static": ["method=random", "sparsity=0.9", *model],  # ERK masks fixed from the first step
        "rigl": ["method=rigl", "sparsity=0.9", *model],  # the same ERK start, masks moved every 100 steps
    }
    tmp = tempfile.mkdtemp(prefix="sparse_lab_prune_bench_")
    epoch_s: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.repeats):
        for name, overrides in variants.items():
            epoch_s[name].append(run_framework(framework_config(data, f"{tmp}/{name}_{r}", overrides))[0])
            print(f"repeat {r}: {name:12s} epoch {epoch_s[name][-1]:.3f} s", flush=True)
    result = {
        "benchmark": "pruning_overhead",
        "data": data,
        "model": args.model,
        "repeats": args.repeats,
        "epoch_s": epoch_s,
        "median_dense_s": statistics.median(epoch_s["dense"]),
        "median_progressive_s": statistics.median(epoch_s["progressive"]),
        "ratio": statistics.median(epoch_s["progressive"]) / statistics.median(epoch_s["dense"]),
        "target_ratio": 1.05,
        "median_static_s": statistics.median(epoch_s["static"]),
        "median_rigl_s": statistics.median(epoch_s["rigl"]),
        "rigl_over_static": statistics.median(epoch_s["rigl"]) / statistics.median(epoch_s["static"]),
        "target_rigl_over_static": 1.1,
        "torch": torch.__version__,
    }
    save_result(result, args.out, ("median_dense_s", "median_progressive_s", "ratio", "rigl_over_static"))


if __name__ == "__main__":
    main()
