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
``--baseline-batches N`` (shared-encoder twins on MNIST) also times, in the same invocation, ``N`` batches
of the seed comparison's own training loop for each method (see :func:`seed_comparison_epoch_s`) and
records its seconds per epoch and the speed-ups over it (per batch, so a run cut short by
``trainer.limit_train_batches`` compares fairly).
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

import torch
from results_io import save_result
from torch import nn

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
    counts = [int(e["train/batches"]) for e in epochs]  # cumulative over the run
    batches = [n - m for n, m in zip(counts, [0, *counts[:-1]])]
    memory_key = "train_peak_cuda_mb" if "train_peak_cuda_mb" in epochs[-1] else "peak_rss_mb"
    return {
        "command": "python -m sparse_lab " + " ".join(cmd[3:]),
        "process_s": time.perf_counter() - start,
        "train_time_s": [e["train_time_s"] for e in epochs],
        "median_train_time_s": statistics.median(e["train_time_s"] for e in epochs),
        "median_s_per_batch": statistics.median(e["train_time_s"] / n for e, n in zip(epochs, batches)),
        "test_acc_by_epoch": [e.get("test/acc") for e in epochs],
        "test_acc": record["test"]["test/acc"],
        "test_acc_std": record["test"].get("test/acc_std"),
        "memory_key": memory_key,
        "peak_memory_mb": max(e[memory_key] for e in epochs),
    }


def seed_comparison_loader() -> torch.utils.data.DataLoader:
    """The seed comparison's training data: torchvision's MNIST, ``ToTensor`` on each sample, batch 64, shuffled."""
    from torchvision import transforms

    from sparse_lab.data import MNISTDataModule

    data = MNISTDataModule(data_dir=os.environ.get("SPARSE_LAB_DATA", "./data")).torchvision_dataset(train=True)
    data.transform = transforms.ToTensor()
    return torch.utils.data.DataLoader(data, batch_size=64, shuffle=True)


def seed_comparison_epoch_s(
    method: str, loader: torch.utils.data.DataLoader, batches: int, seed: int = 0, warmup: int = 5
) -> dict:
    """Seconds per MNIST epoch of the seed comparison's own loop for ``method``, from ``batches`` timed batches.

    Written here from the comparison's description, to be timed against: ``loader``
    (:func:`seed_comparison_loader`: ``ToTensor`` on each sample, no workers); the encoder
    conv32-ReLU-pool-conv64-ReLU-pool-FC128 in the default memory layout, ten denoisers
    ``concat(features, z) -> 256 -> 10``; the forward chain drawn per batch. ``noprop_shared``: the
    encoder's Adam step on the summed MSE through the frozen denoisers, then each denoiser's own Adam
    step, with the features recomputed under ``no_grad`` for each and one ``.item()`` per loss.
    ``noprop_shared_backprop``: one Adam step on the summed MSE, one ``.item()``. ``loading_epoch_s``:
    the ``DataLoader`` alone, timed over as many batches.
    """
    torch.manual_seed(seed)
    steps, classes = 10, 10
    alpha = torch.linspace(1.0, 0.1, steps)
    encoder = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1600, 128),
    )  # fmt: skip
    denoisers = nn.ModuleList(
        nn.Sequential(nn.Linear(128 + classes, 256), nn.ReLU(), nn.Linear(256, classes)) for _ in range(steps)
    )

    def mse(t: int, features: torch.Tensor, z: list[torch.Tensor], u: torch.Tensor) -> torch.Tensor:
        return ((denoisers[t](torch.cat([features, z[t + 1]], dim=1)) - u) ** 2).mean()

    if method == "noprop_shared":
        encoder_opt = torch.optim.Adam(encoder.parameters(), lr=1e-3)
        denoiser_opts = [torch.optim.Adam(d.parameters(), lr=1e-3) for d in denoisers]
    else:
        opt = torch.optim.Adam([*encoder.parameters(), *denoisers.parameters()], lr=1e-3)
    if batches < 1 or warmup + batches > len(loader):
        raise ValueError(f"batches must be in 1..{len(loader) - warmup}, got {batches}")
    start = None
    for i, (x, y) in enumerate(loader):
        if i == warmup:
            start = time.perf_counter()
        if i == warmup + batches:
            break
        u = torch.zeros(len(y), classes).scatter_(1, y.unsqueeze(1), 1)
        z = [u]
        for t in range(steps):
            z.append(alpha[t].sqrt() * z[-1] + (1 - alpha[t]).sqrt() * torch.randn_like(u))
        if method == "noprop_shared":
            encoder_opt.zero_grad()
            features = encoder(x)
            denoisers.requires_grad_(False)
            sum(mse(t, features, z, u) for t in range(steps)).backward()
            denoisers.requires_grad_(True)
            encoder_opt.step()
            for t in range(steps):
                with torch.no_grad():
                    features = encoder(x)
                denoiser_opts[t].zero_grad()
                loss = mse(t, features, z, u)
                loss.backward()
                denoiser_opts[t].step()
                loss.item()
        else:
            features = encoder(x)
            loss = sum(mse(t, features, z, u) for t in range(steps))
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
    per_batch = (time.perf_counter() - start) / batches
    start = time.perf_counter()  # the same number of batches of loading alone
    for i, _ in enumerate(loader):
        if i == batches:
            break
    loading = (time.perf_counter() - start) / batches
    return {
        "timed_batches": batches,
        "s_per_batch": per_batch,
        "epoch_s": per_batch * len(loader),
        "loading_epoch_s": loading * len(loader),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="noprop_shared_mnist")
    parser.add_argument("--methods", default="noprop_shared,noprop_shared_backprop", help="NoProp method, then its twin")
    parser.add_argument("--hardware", default="cpu")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--reference-epoch-s", default=None, help="reference seconds per epoch: NOPROP,BACKPROP")
    parser.add_argument("--baseline-batches", type=int, default=0, help="time the seed comparison's loop too")
    parser.add_argument("--out", default="benchmarks/results/noprop_twins.json")
    args = parser.parse_args()
    noprop, backprop = args.methods.split(",")
    if args.baseline_batches and (noprop, backprop) != ("noprop_shared", "noprop_shared_backprop"):
        parser.error("--baseline-batches times the seed comparison's loop: only for noprop_shared,noprop_shared_backprop")
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
    if args.baseline_batches:
        loader = seed_comparison_loader()
        baseline = {m: seed_comparison_epoch_s(m, loader, args.baseline_batches) for m in (noprop, backprop)}
        result["seed_comparison_loop"] = baseline
        result["speedup_vs_seed_comparison_loop"] = {
            m: baseline[m]["s_per_batch"] / runs[m]["median_s_per_batch"] for m in (noprop, backprop)
        }
        for m in (noprop, backprop):
            print(
                f"{m:24s} seed comparison's loop {baseline[m]['epoch_s']:.1f} s/epoch "
                f"(its DataLoader alone {baseline[m]['loading_epoch_s']:.1f} s)",
                flush=True,
            )
    save_result(result, args.out, ("time_ratio", "memory_ratio", "speedup_vs_reference", "speedup_vs_seed_comparison_loop"))


if __name__ == "__main__":
    main()
