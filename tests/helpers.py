"""Callbacks used by tests through config overrides (e.g. +callbacks.crash._target_=tests.helpers.CrashAtStep)."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback


class SimulatedCrash(RuntimeError):
    """Raised by CrashAtStep."""


class CrashAtStep(Callback):
    """Interrupt training when ``trainer.global_step`` reaches ``step`` (a stand-in for a killed job)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            raise SimulatedCrash(f"simulated crash at step {self.step}")


class CrashInRun(Callback):
    """Interrupt training at the first step of a run whose dir name is ``run_name`` (e.g. a lottery round)."""

    def __init__(self, run_name: str) -> None:
        self.run_name = run_name

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        from pathlib import Path

        if Path(trainer.default_root_dir).name == self.run_name:
            raise SimulatedCrash(f"simulated crash in {self.run_name}")


class SigtermAtStep(Callback):
    """Send this process SIGTERM when ``trainer.global_step`` reaches ``step`` (a scheduler's preemption)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        import os
        import signal

        if trainer.global_step == self.step:
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
