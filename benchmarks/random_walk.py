"""Random-walk sparse backprop: mask construction time, and training step time against ``full``.

1. ``RandomWalkMask.masks`` on the 784-256-128-10 MLP, batch labels of 128, at 10 and 1000 paths
   (median of ``--mask-calls`` calls).
2. One training epoch through sparse_lab for ``full``, ``rw_target paths=1000``, its edge-sparse
   backward (``rw_backward=edges``) and the row-sparse backward variant (``rw_backward=rows``, 10
   and 1000 paths), interleaved ``--repeats`` times in
   the same process; per-step time = epoch time / steps, ratios of medians against ``full``.
   ``full_stats`` is ``full`` with the density recording that every ``rw_*`` run does
   (``UpdateStats``; SPEC section 1's step: "3. record density" for FULL too, as in
   ``experiment=rw_mnist``): ``rw_*`` against ``full_stats`` is the cost of the walk and the
   masking alone, the ratio the target is judged on; against ``full`` it also includes the metrics.

Usage::

    python benchmarks/random_walk.py [--repeats 3] [--data mnist|synthetic] [--out FILE]
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import save_result  # noqa: E402
from epoch_time import default_data, framework_config, run_framework  # noqa: E402

from sparse_lab.models import MLP  # noqa: E402
from sparse_lab.sparsity import RandomWalkMask  # noqa: E402

VARIANTS = {
    "full": ["method=full"],
    "full_stats": ["method=full", "+callbacks.update_stats._target_=sparse_lab.callbacks.UpdateStats"],
    "rw_target_1000": ["method=rw_target", "paths=1000"],
    "rw_target_1000_edges": ["method=rw_target", "paths=1000", "rw_backward=edges"],
    "rw_target_1000_rows": ["method=rw_target", "paths=1000", "rw_backward=rows"],
    "rw_target_10_rows": ["method=rw_target", "paths=10", "rw_backward=rows"],
}


def time_masks(paths: int, calls: int) -> float:
    """Median milliseconds of one mask construction."""
    torch.manual_seed(0)
    model = MLP((1, 28, 28), 10, (256, 128))
    labels = torch.randint(0, 10, (128,))
    generator = torch.Generator().manual_seed(0)
    sampler = RandomWalkMask(paths, start="target", bias="weight")
    for _ in range(20):
        sampler.masks(model.linears, labels, generator)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        sampler.masks(model.linears, labels, generator)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mask-calls", type=int, default=500)
    parser.add_argument("--data", choices=["mnist", "synthetic"], default=None, help="default: mnist if present")
    parser.add_argument("--out", default="benchmarks/results/random_walk.json")
    args = parser.parse_args()

    masks_ms = {paths: time_masks(paths, args.mask_calls) for paths in (10, 1000)}
    print(f"mask construction: 10 paths {masks_ms[10]:.3f} ms, 1000 paths {masks_ms[1000]:.3f} ms", flush=True)

    data = args.data or default_data()
    tmp = tempfile.mkdtemp(prefix="sparse_lab_rw_bench_")
    epoch_s: dict[str, list[float]] = {name: [] for name in VARIANTS}
    steps = 0
    for r in range(args.repeats):
        for name, overrides in VARIANTS.items():
            cfg = framework_config(data, f"{tmp}/{name}_{r}", overrides)
            epoch_s[name].append(run_framework(cfg)[0])
            steps = json.loads((Path(cfg.output_dir) / "metrics.json").read_text())["epochs"][0]["step"]
            print(f"repeat {r}: {name:22s} epoch {epoch_s[name][-1]:.3f} s", flush=True)

    step_ms = {name: statistics.median(v) / steps * 1e3 for name, v in epoch_s.items()}
    result = {
        "benchmark": "random_walk",
        "mask_ms_median": {str(k): v for k, v in masks_ms.items()},
        "mask_target_ms": 2.0,
        "data": data,
        "steps_per_epoch": steps,
        "repeats": args.repeats,
        "epoch_s": epoch_s,
        "step_ms_median": step_ms,
        "step_ratio_vs_full": {name: step_ms[name] / step_ms["full"] for name in VARIANTS},
        "step_ratio_vs_full_stats": {name: step_ms[name] / step_ms["full_stats"] for name in VARIANTS},
        "step_ratio_target_rw_target_1000": 1.3,
        "target_judged_on": "step_ratio_vs_full_stats.rw_target_1000 (both record density, SPEC section 1 step 3)",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    save_result(result, args.out, ("mask_ms_median", "step_ms_median", "step_ratio_vs_full", "step_ratio_vs_full_stats"))


if __name__ == "__main__":
    main()
