"""GPU determinism: does a rerun, and a resume after a crash, end bit-identical to an uninterrupted run?

For each setting (MLP progressive, small CNN full, small CNN progressive) and ``trainer.deterministic``
true / false: one uninterrupted run, the same run again, and a run that crashes in the middle of epoch
3 and is resumed from its last checkpoint; the largest absolute difference of any state-dict entry
(weights, pruning masks) against the uninterrupted run. Synthetic data, 4 epochs, batch 64. Needs a
GPU. Usage::

    python benchmarks/gpu_determinism.py [--out FILE] [SETTING:DETERMINISTIC ...]   # e.g. cnn_full:true
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import Callback

from sparse_lab.app import CONFIG_DIR, train
from results_io import save_result

BASE = [
    "data=synthetic", "hardware=gpu", "epochs=4", "batch_size=64", "data.val_size=0", "data.test_each_epoch=true",
    "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false",
]  # fmt: skip
PROGRESSIVE = [
    "method=progressive", "sparsity=0.5",
    "method.callbacks.pruner.schedule._target_=sparse_lab.sparsity.LinearExactSchedule",
]  # fmt: skip
SETTINGS = {"mlp_progressive": PROGRESSIVE, "cnn_full": ["model=cnn"], "cnn_progressive": ["model=cnn", *PROGRESSIVE]}
CRASH_STEP = 40  # 16 steps per epoch: the middle of epoch 3 (0-based 2); last.ckpt holds epoch 2's end


class SimulatedCrash(RuntimeError):
    """Raised by :class:`CrashAtStep`."""


class CrashAtStep(Callback):
    """Interrupt training when ``trainer.global_step`` reaches ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            raise SimulatedCrash(f"simulated crash at step {self.step}")


def run(out_dir: Path, overrides: list[str]) -> None:
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"output_dir={out_dir}", *overrides])
    train(cfg)


def state(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")["state_dict"]


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("only", nargs="*", help="SETTING:true|false pairs to run (default: all)")
    parser.add_argument("--out", default="benchmarks/results/gpu_determinism.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_determinism: no CUDA device")
    result: dict[str, Any] = {
        "benchmark": "gpu_determinism",
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "CUBLAS_WORKSPACE_CONFIG at start": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "runs": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="sparse_lab_gpu_det_"))
    for name, extra in SETTINGS.items():
        for det in ("true", "false"):
            if args.only and f"{name}:{det}" not in args.only:
                continue
            common = [*BASE, *extra, f"trainer.deterministic={det}"]
            dirs = {k: tmp / f"{name}_{det}_{k}" for k in ("whole", "again", "crashed", "resumed")}
            run(dirs["whole"], common)
            run(dirs["again"], common)
            try:
                run(dirs["crashed"], [*common, "+callbacks.crash._target_=__main__.CrashAtStep", f"+callbacks.crash.step={CRASH_STEP}"])
            except SimulatedCrash:
                pass
            run(dirs["resumed"], [*common, f"resume={dirs['crashed']}"])
            whole = state(dirs["whole"])
            key = f"{name} deterministic={det}"
            result["runs"][key] = {
                "rerun_max_abs_diff": max_abs_diff(whole, state(dirs["again"])),
                "resume_max_abs_diff": max_abs_diff(whole, state(dirs["resumed"])),
            }
            print(key, result["runs"][key], flush=True)
    save_result(result, args.out)


if __name__ == "__main__":
    main()
