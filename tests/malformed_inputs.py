"""Malformed inputs that must be refused before any work: a message naming the key, no traceback, exit code 2.

The table is tested in-process by tests/test_faults.py (fast, each refusal timed under 10 s); this
script runs every entry through the command line, as a user would, and prints how many were refused
correctly and how many of those in under 10 s of wall time (most of which is Python importing torch
and Lightning: the script also times that alone)::

    python tests/malformed_inputs.py            # all entries
    python tests/malformed_inputs.py --limit 5  # the first five
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE = ["data=synthetic", "hardware=cpu", "epochs=1"]  # dropped where an entry picks its own group

NOPROP_DT = ["method=noprop_dt", "model=noprop_dt"]
NOPROP_SHARED = ["method=noprop_shared", "model=noprop_shared"]
TB = "100000000000"  # 1e11, written as an integer: Hydra reads 1e11 as a float

# (overrides, the key the message must name). gpu_less: only refused on a machine without a CUDA GPU.
MALFORMED: list[tuple[list[str], str]] = [
    (["epochs=0"], "epochs"),
    (["epochs=-1"], "epochs"),
    (["epochs=2.5"], "epochs"),
    (["epochs=inf"], "epochs"),
    (["batch_size=0"], "batch_size"),
    (["batch_size=nan"], "batch_size"),
    (["batch_size=5000"], "batch_size"),  # more than the 896 training samples
    (["lr=0"], "lr"),
    (["lr=-1e-3"], "lr"),
    (["lr=inf"], "lr"),
    (["lr=nan"], "lr"),
    (["lr=1e400"], "lr"),  # overflows to inf
    (["seed=-1"], "seed"),
    (["seed=1.5"], "seed"),
    (["method=rw_target", "paths=0"], "paths"),
    (["method=rw_target", "paths=1000000000000"], "paths"),  # the walk would ask for terabytes
    (["method=rw_target", "method.callbacks.update_stats.changed_every_n_steps=0"], "changed_every_n_steps"),
    (["sparsity=1.0"], "sparsity"),
    (["sparsity=nan"], "sparsity"),
    (["method=progressive", "sparsity=-0.5"], "sparsity"),
    (["method=snip", "mask.reinit=maybe"], "mask.reinit"),
    (["method=progressive", "mask.reinit=true"], "mask.reinit"),  # no pruning at initialization to reinit after
    (["method=lottery", "mask.shuffle=layer"], "mask.shuffle"),  # the lottery's control is method.protocol.control
    (["target_acc=1.5"], "target_acc"),
    (["target_acc=inf"], "target_acc"),
    (["data.val_size=-1"], "data.val_size"),
    (["data.val_size=1024"], "data.val_size"),  # leaves no training samples
    (["data.eval_batch_size=0"], "data.eval_batch_size"),
    ([f"data.eval_batch_size={TB}"], "data.eval_batch_size"),
    (["data.train_size=0"], "data.train_size"),
    ([f"data.train_size={TB}"], "data.train_size"),
    (["data.test_size=0"], "data.test_size"),
    (["data.noise=inf"], "data.noise"),
    (["data.noise=-1"], "data.noise"),
    (["data.num_classes=1"], "data.num_classes"),
    (["data.shape=[1,0,28]"], "data.shape"),
    (["data.std=[0]"], "data.std"),
    (["data.mean=[nan]"], "data.mean"),
    (["data.split_seed=-1"], "data.split_seed"),
    (["model.hidden=[0]"], "model.hidden"),
    (["model.hidden=[1000000,1000000]"], "model.hidden"),  # 1e12 parameters
    (["model=cnn", "model.channels=[0,64]"], "model.channels"),
    (["model=cnn", "model.hidden=100000000"], "model.hidden"),
    (["model=resnet18", "model.width=0"], "model.width"),
    (["model=resnet18", "model.width=100000"], "model.width"),
    (["method.module.label_smoothing=1"], "method.module.label_smoothing"),
    (["method.module.metric_update_every=0"], "method.module.metric_update_every"),
    ([*NOPROP_DT, "method.module.eval_runs=0"], "method.module.eval_runs"),
    ([*NOPROP_DT, f"method.module.eval_runs={TB}"], "method.module.eval_runs"),
    ([*NOPROP_DT, "model.steps=0"], "model.steps"),
    ([*NOPROP_DT, "model.width=nan"], "model.width"),
    ([*NOPROP_DT, "model.dropout=1"], "model.dropout"),
    ([*NOPROP_DT, "model.schedule_offset=0"], "model.schedule_offset"),
    ([*NOPROP_DT, "method.module.optimizer.weight_decay=-1"], "method.module.optimizer.weight_decay"),
    ([*NOPROP_SHARED, "model.alpha_end=0"], "model.alpha_end"),
    (["method=oneshot", "method.protocol.percents=[0,150]"], "method.protocol.percents"),
    (["method=oneshot", "method.protocol.percents=[-10]"], "method.protocol.percents"),
    (["method=oneshot", "method.protocol.percents=[]"], "method.protocol.percents"),
    (["method=lottery", "method.protocol.rounds=0"], "method.protocol.rounds"),
    (["method=lottery", "method.protocol.prune_percent=100"], "method.protocol.prune_percent"),
    (["method=lottery", "method.protocol.prune_percent=nan"], "method.protocol.prune_percent"),
    (["method=lottery", "method.protocol.round_epoch_cap=0"], "method.protocol.round_epoch_cap"),
    (["method=lottery", "method.protocol.rewind_step=-1"], "method.protocol.rewind_step"),
    (["method=lottery", "method.protocol.rewind_step=1000"], "method.protocol.rewind_step"),  # past round 0's 7 steps
    (["method=lottery", "method.protocol.control_seed=-1"], "method.protocol.control_seed"),
    (["method=lottery", "target_acc=0.5"], "method.protocol.target"),  # synthetic data: no test/acc each epoch
    (["hardware=gpu"], "trainer.accelerator"),
    (["hardware=ddp"], "trainer.accelerator"),
    (["trainer.accelerator=quantum"], "trainer.accelerator"),
    (["trainer.devices=0"], "trainer.devices"),
    (["trainer.precision=8-true"], "trainer.precision"),
    (["trainer.precision=16-mixed"], "trainer.precision"),  # on the CPU
    (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps"),
    (["resume=/nonexistent/run"], "resume"),
]
GPU_LESS = {"hardware=gpu", "hardware=ddp"}  # accepted where a GPU is present


def applicable(overrides: list[str]) -> bool:
    """False for entries that are only malformed on a machine without a GPU, when this one has one."""
    if not GPU_LESS & set(overrides):
        return True
    import torch

    return not torch.cuda.is_available()


def with_base(overrides: list[str]) -> list[str]:
    """``BASE`` without the groups ``overrides`` choose, then ``overrides``."""
    chosen = {o.split("=", 1)[0] for o in overrides}
    return [b for b in BASE if b.split("=", 1)[0] not in chosen] + overrides


def run_cli(overrides: list[str], key: str, run_dir: Path) -> tuple[bool, float, str]:
    """Run ``python -m sparse_lab`` on one entry: (refused as required, seconds, why not)."""
    t0 = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "sparse_lab", *with_base(overrides), f"hydra.run.dir={run_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    seconds = time.perf_counter() - t0
    problems = []
    if result.returncode != 2:
        problems.append(f"exit code {result.returncode}")
    if "Traceback" in result.stderr:
        problems.append("a traceback")
    if key not in result.stderr:
        problems.append(f"no {key} in the message")
    if (run_dir / "metrics.json").exists():
        problems.append("metrics.json was written")
    return not problems, seconds, ", ".join(problems) + ("\n" + result.stderr[-600:] if problems else "")


def import_seconds() -> float:
    """Wall time of importing the entry point and what validation imports (Python, torch, Lightning, the
    methods): the floor under every refusal."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sparse_lab.app, sparse_lab.methods"], cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="run only the first N entries")
    args = parser.parse_args(argv)
    entries = [e for e in MALFORMED if applicable(e[0])][: args.limit]
    refused, fast, slowest = 0, 0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i, (overrides, key) in enumerate(entries):
            ok, seconds, why = run_cli(overrides, key, Path(tmp) / str(i))
            refused += ok
            fast += ok and seconds < 10
            slowest = max(slowest, seconds)
            print(f"{'ok  ' if ok else 'FAIL'} {seconds:5.1f} s  {' '.join(overrides)}" + ("" if ok else f"  <- {why}"), flush=True)
    floor = import_seconds()
    print(f"{refused} of {len(entries)} malformed inputs refused before training (exit 2, the key named, no traceback, "
          f"no metrics.json), {fast} of them in under 10 s (slowest {slowest:.1f} s; importing sparse_lab.app and the methods "
          f"took {floor:.1f} s)")
    return 0 if refused == fast == len(entries) else 1


if __name__ == "__main__":
    sys.exit(main())
