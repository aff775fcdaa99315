"""NoProp against its backprop twin: accuracy, train time per epoch and peak memory, side by side.

Runs each method once through the app (``python -m sparse_lab experiment=E method=M ...``, one
process each, one after the other), reads the runs' ``metrics.json`` and writes the ratios
NoProp / backprop. Peak memory is CUDA ``max_memory_allocated`` during training (evaluation
excluded) on a GPU, the process's peak RSS on the CPU.
Usage::

    python benchmarks/noprop_twins.py --experiment noprop_shared_mnist \\
        --methods noprop_shared,noprop_shared_backprop [--hardware cpu|gpu] [--set KEY=VALUE ...] [--out FILE]

``--set`` passes further overrides to both runs (e.g. ``--set model.width=0.25 --set epochs=5``).
``--reference-epoch-s A,B`` records reference seconds per epoch of the two methods and the speed-ups.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_io import save_result

REPO = Path(__file__).resolve().parent.parent


def run(experiment: str, method: str, hardware: str, overrides: list[str], run_dir: Path) -> dict:
    """One run through the app; its metrics.json plus the wall time of the whole process."""
    cmd = [
        sys.executable, "-m", "sparse_lab", f"experiment={experiment}", f"method={method}", f"hardware={hardware}",
        f"hydra.run.dir={run_dir}", "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false", *overrides,
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True)
    record = json.loads((run_dir / "metrics.json").read_text())
    epochs = record["epochs"]
    memory_key = "train_peak_cuda_mb" if "train_peak_cuda_mb" in epochs[-1] else "peak_rss_mb"
    return {
        "command": "python -m sparse_lab " + " ".join(cmd[3:]),
        "process_s": time.perf_counter() - start,
        "train_time_s": [e["train_time_s"] for e in epochs],
        "median_train_time_s": statistics.median(e["train_time_s"] for e in epochs),
        "test_acc_by_epoch": [e.get("test/acc") for e in epochs],
        "test_acc": record["test"]["test/acc"],
        "test_acc_std": record["test"].get("test/acc_std"),
        "memory_key": memory_key,
        "peak_memory_mb": max(e[memory_key] for e in epochs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="noprop_shared_mnist")
    parser.add_argument("--methods", default="noprop_shared,noprop_shared_backprop", help="NoProp method, then its twin")
    parser.add_argument("--hardware", default="cpu")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--reference-epoch-s", default=None, help="reference seconds per epoch: NOPROP,BACKPROP")
    parser.add_argument("--out", default="benchmarks/results/noprop_twins.json")
    args = parser.parse_args()
    noprop, backprop = args.methods.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="sparse_lab_noprop_bench_"))
    runs = {m: run(args.experiment, m, args.hardware, args.overrides, tmp / m) for m in (noprop, backprop)}
    for method, r in runs.items():
        print(
            f"{method:24s} test acc {100 * r['test_acc']:.2f} +- {100 * (r['test_acc_std'] or 0):.2f}  "
            f"train {r['median_train_time_s']:.1f} s/epoch  peak {r['memory_key']} {r['peak_memory_mb']:.0f} MB",
            flush=True,
        )
    result = {
        "benchmark": "noprop_twins",
        "experiment": args.experiment,
        "hardware": args.hardware,
        "overrides": args.overrides,
        "runs": runs,
        "time_ratio": runs[noprop]["median_train_time_s"] / runs[backprop]["median_train_time_s"],
        "memory_ratio": runs[noprop]["peak_memory_mb"] / runs[backprop]["peak_memory_mb"],
        "host": {"cpus": os.cpu_count()},
    }
    if args.reference_epoch_s:
        ref = [float(v) for v in args.reference_epoch_s.split(",")]
        result["reference_epoch_s"] = dict(zip((noprop, backprop), ref))
        result["speedup_vs_reference"] = {
            m: ref[i] / runs[m]["median_train_time_s"] for i, m in enumerate((noprop, backprop))
        }
    save_result(result, args.out, ("time_ratio", "memory_ratio", "speedup_vs_reference"))


if __name__ == "__main__":
    main()
