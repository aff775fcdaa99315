"""Callbacks used by tests through config overrides (e.g. +callbacks.crash._target_=tests.helpers.CrashAtStep),
and reading a run's results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback


TIMING = {"train_time_s", "epoch_time_s", "peak_rss_mb", "peak_cuda_mb", "pruning/time_s"}  # wall clock and memory


def epoch_rows(run: Path) -> list[dict]:
    """A run's metrics.json epoch rows without the wall-clock and memory fields, which differ between
    runs that compute the same."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in json.loads((run / "metrics.json").read_text())["epochs"]]


def final_state(run_dir: Path) -> dict[str, Any]:
    """The state dict of ``run_dir``'s ``checkpoints/last.ckpt``, on the CPU."""
    import torch

    return torch.load(Path(run_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


class SimulatedCrash(RuntimeError):
    """Raised by CrashAtStep."""


class CrashAtStep(Callback):
    """Interrupt training when ``trainer.global_step`` reaches ``step`` (a stand-in for a killed job)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            raise SimulatedCrash(f"simulated crash at step {self.step}")


class CrashAtBatch(Callback):
    """Interrupt training at batch ``batch`` of epoch ``epoch`` (for methods whose ``global_step`` counts
    several optimizer steps a batch)."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise SimulatedCrash(f"simulated crash at batch {self.batch} of epoch {self.epoch}")


class CrashInRun(Callback):
    """Interrupt training at the first step of a run whose dir name is ``run_name`` (e.g. a lottery round)."""

    def __init__(self, run_name: str) -> None:
        self.run_name = run_name

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        from pathlib import Path

        if Path(trainer.default_root_dir).name == self.run_name:
            raise SimulatedCrash(f"simulated crash in {self.run_name}")


class SigtermAtStep(Callback):
    """Send this process SIGTERM when ``trainer.global_step`` reaches ``step`` (a scheduler's preemption);
    with ``rank``, only the process of that global rank."""

    def __init__(self, step: int, rank: int | None = None) -> None:
        self.step = step
        self.rank = rank

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        import os
        import signal

        if trainer.global_step == self.step and self.rank in (None, trainer.global_rank):
            os.kill(os.getpid(), signal.SIGTERM)


class SigtermInValidation(Callback):
    """Send this process SIGTERM at validation batch ``batch`` of epoch ``epoch`` (a preemption during
    the evaluation after an epoch); with ``rank``, only the process of that global rank."""

    def __init__(self, epoch: int, batch: int, rank: int | None = None) -> None:
        self.epoch = epoch
        self.batch = batch
        self.rank = rank

    def on_validation_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        import os
        import signal

        if (trainer.current_epoch == self.epoch and batch_idx == self.batch and not trainer.sanity_checking
                and self.rank in (None, trainer.global_rank)):
            os.kill(os.getpid(), signal.SIGTERM)


class KillInValidation(Callback):
    """SIGKILL this process at validation batch ``batch`` of epoch ``epoch`` (a job killed during evaluation),
    in the run dir named ``run_name`` if given (e.g. a lottery round)."""

    def __init__(self, epoch: int, batch: int = 0, run_name: str | None = None) -> None:
        self.epoch = epoch
        self.batch = batch
        self.run_name = run_name

    def on_validation_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        import os
        import signal

        from pathlib import Path

        if self.run_name is not None and Path(trainer.default_root_dir).name != self.run_name:
            return
        if trainer.current_epoch == self.epoch and batch_idx == self.batch and not trainer.sanity_checking:
            os.kill(os.getpid(), signal.SIGKILL)


class GradNormProbe(Callback):
    """Records, after every training batch (its optimizer step done, the gradients it stepped with still
    in place), the total 2-norm of the gradients and whether every pruned weight's gradient is zero;
    writes them to ``<run dir>/grad_probe.json`` when training ends."""

    def __init__(self) -> None:
        self.norms: list[float] = []
        self.pruned_grads_zero: list[bool] = []

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        import torch

        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))))
        masks = next((cb.masks for cb in trainer.callbacks if getattr(cb, "masks", None) is not None), None)
        if masks is not None:
            params = dict(pl_module.model.named_parameters())
            self.pruned_grads_zero.append(all(not params[n].grad[~m].any() for n, m in masks.masks.items()))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        import json
        from pathlib import Path

        record = {"norms": self.norms, "pruned_grads_zero": self.pruned_grads_zero}
        (Path(trainer.default_root_dir) / "grad_probe.json").write_text(json.dumps(record))
