"""One Hydra sweep run serially (basic launcher) and in parallel (joblib launcher), same jobs.

Both sweeps run ``--jobs`` tiny jobs (``seed=0..jobs-1``; synthetic data, an MLP, ``--epochs``
epochs) through ``python -m sparse_lab -m`` in a subprocess with the same overrides; the second one
adds ``hydra/launcher=joblib hydra.launcher.n_jobs=N``. Wall time of each whole command (Python
start, composition and every job included) is measured, ``--repeats`` times interleaved; the ratio
of medians serial / parallel (the speedup) is printed and saved as JSON. Needs the cluster extra
(``pip install -e ".[cluster]"``). joblib's workers get ``cores // n_jobs`` torch threads each, the
serial jobs all cores. Usage::

    python benchmarks/sweep_parallel.py [--jobs 4] [--n-jobs 2] [--repeats 1] [--quick] [--out FILE] [overrides ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_io import save_result

REPO = Path(__file__).resolve().parent.parent


def sweep_command(sweep_dir: Path, jobs: int, overrides: list[str], n_jobs: int | None) -> list[str]:
    """``python -m sparse_lab -m`` over ``seed=0..jobs-1``; with ``n_jobs``, on the joblib launcher."""
    launcher = [] if n_jobs is None else ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"]
    seeds = ",".join(str(s) for s in range(jobs))
    return [sys.executable, "-m", "sparse_lab", "-m", *launcher, f"seed={seeds}", *overrides, f"hydra.sweep.dir={sweep_dir}"]


def run_sweep(command: list[str], sweep_dir: Path, jobs: int) -> float:
    """Run one sweep; its wall time in seconds. Raises if it failed or a job did not complete."""
    t0 = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if result.returncode != 0:
        raise RuntimeError(f"sweep failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-3000:]}")
    for job in range(jobs):
        status = json.loads((sweep_dir / str(job) / "metrics.json").read_text())["status"]
        if status != "completed":
            raise RuntimeError(f"job {job} of {sweep_dir} ended with status {status}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=4, help="jobs in the sweep")
    parser.add_argument("--n-jobs", type=int, default=2, help="joblib workers of the parallel sweep")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=40000, help="synthetic training images per job")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 jobs of 1 epoch on 1024 images")
    parser.add_argument("--out", default="benchmarks/results/sweep_parallel.json")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every job")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.epochs, args.train_size = 2, 1, 1024

    overrides = [
        "data=synthetic", f"data.train_size={args.train_size}", "data.val_size=0", "hardware=cpu",
        f"epochs={args.epochs}", "logger=null", "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false",
        *args.overrides,
    ]
    tmp = Path(tempfile.mkdtemp(prefix="sparse_lab_sweep_"))
    serial, parallel = [], []
    commands: dict[str, list[str]] = {}
    for r in range(args.repeats):
        for name, n_jobs, times in (("serial", None, serial), ("parallel", args.n_jobs, parallel)):
            sweep_dir = tmp / f"{name}_{r}"
            commands[name] = sweep_command(sweep_dir, args.jobs, overrides, n_jobs)
            times.append(run_sweep(commands[name], sweep_dir, args.jobs))
        print(f"repeat {r}: serial {serial[-1]:.1f}s  joblib n_jobs={args.n_jobs} {parallel[-1]:.1f}s", flush=True)

    result = {
        "benchmark": "sweep_parallel",
        "jobs": args.jobs,
        "n_jobs": args.n_jobs,
        "epochs": args.epochs,
        "train_images": args.train_size,
        "repeats": args.repeats,
        "serial_runs_s": serial,
        "parallel_runs_s": parallel,
        "serial_s": statistics.median(serial),
        "parallel_s": statistics.median(parallel),
        "ratio": statistics.median(serial) / statistics.median(parallel),  # speedup: > 1 when joblib is faster
        "commands": {k: " ".join(v[1:]) for k, v in commands.items()},
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    save_result(result, args.out, ("jobs", "n_jobs", "serial_s", "parallel_s", "ratio"))


if __name__ == "__main__":
    main()
