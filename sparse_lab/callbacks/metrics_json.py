"""Writes a run's metrics to ``metrics.json`` as they come, so nothing is lost when a run fails."""

from __future__ import annotations

import math
import os
import resource
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from sparse_lab import run_record
from sparse_lab.callbacks.preemption import is_preemption


def _cuda_in_use() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def peak_memory_mb() -> dict[str, float]:
    """Peak resident memory of this process, and peak CUDA memory allocated when CUDA is in use."""
    out = {run_record.PEAK_RSS: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if _cuda_in_use():
        out[run_record.PEAK_CUDA] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float)):
            out[key] = float(value) if math.isfinite(value) else str(value)
    return out


class MetricsJSONWriter(Callback):
    """Keeps ``{"status", "epochs": [...], "test": {...}, ...}`` up to date on disk (the schema:
    :mod:`sparse_lab.run_record`).

    One row per training epoch (train and per-epoch eval metrics, train and epoch wall time,
    peak memory: ``peak_rss_mb`` of the process; on a GPU ``train_peak_cuda_mb``, the epoch's
    training alone, and ``peak_cuda_mb``, the epoch with its evaluation); ``test`` holds the final test metrics; ``status`` is
    ``running``, ``completed``, ``failed`` (with the error) or ``interrupted`` (SIGTERM). The file is replaced atomically on every write.

    Data parallel: every metric it records is already reduced over ranks (torchmetrics sync on
    compute), and only global rank 0 writes. Under ``ddp_spawn`` each ``fit``/``test`` runs in fresh
    processes holding a copy of this callback as it was in the main process, so the file, not the
    in-memory record, carries the rows from one to the next: a test run starts from the file, and
    code in the main process adds fields with :meth:`update`.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.record: dict[str, Any] = run_record.new()
        self._t_fit = self._t_epoch = 0.0
        self._train_time: float | None = None
        self._train_peak: dict[str, float] = {}
        self._pending: dict[str, Any] | None = None
        self._trainer: L.Trainer | None = None
        self._trained_here = False  # an epoch started in this process (not so in ddp_spawn's main process)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer
        if stage != "fit":  # a test after a fit that ran in other processes (ddp_spawn): keep its rows
            self._reload()

    def _reload(self) -> None:
        if self.path.is_file():
            self.record = run_record.read(self.path)

    def update(self, **fields: Any) -> None:
        """Set top-level ``fields`` in the file's record (re-read first) and write it."""
        self._reload()
        self.record.update(fields)
        self.write()

    def state_dict(self) -> dict[str, Any]:
        # A checkpoint written at the end of an epoch holds that epoch's row even though the row
        # reaches metrics.json only at the next hook: a resumed run must not lose it.
        record = dict(self.record)
        if self._pending is not None and self._trainer is not None:
            record[run_record.EPOCHS] = [*self.record[run_record.EPOCHS], {**self._pending, **_scalars(self._trainer.callback_metrics)}]
        return {"record": record}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.record = state_dict["record"]

    def write(self) -> None:
        """Replace the file with the record (global rank 0 only)."""
        if self._trainer is not None and not self._trainer.is_global_zero:
            return
        run_record.write(self.path, self.record)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t_fit = self._t_epoch = time.perf_counter()  # a fit resumed within an epoch starts no epoch
        self.record[run_record.STATUS] = run_record.RUNNING
        self.write()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._trained_here = True
        self._flush_epoch(trainer)
        if _cuda_in_use():
            torch.cuda.reset_peak_memory_stats()
        self._t_epoch = time.perf_counter()
        self._train_time = None
        self._train_peak = {}

    def _end_training_phase(self) -> None:
        self._train_time = time.perf_counter() - self._t_epoch
        if _cuda_in_use():  # training alone, before the epoch's evaluation allocates its own
            self._train_peak = {run_record.TRAIN_PEAK_CUDA: torch.cuda.max_memory_allocated() / 2**20}

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and self._train_time is None:
            self._end_training_phase()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._train_time is None:  # no evaluation this epoch
            self._end_training_phase()
        self._pending = {
            run_record.EPOCH: trainer.current_epoch,
            run_record.STEP: trainer.global_step,
            run_record.TRAIN_TIME: self._train_time,
            run_record.EPOCH_TIME: time.perf_counter() - self._t_epoch,
            **self._train_peak,
            **peak_memory_mb(),
        }

    def _flush_epoch(self, trainer: L.Trainer) -> None:
        # Called at the first hook after an epoch ends, when everything that any callback or the
        # module logged in its own on_train_epoch_end has reached trainer.callback_metrics.
        if self._pending is None:
            return
        row = {**self._pending, **_scalars(trainer.callback_metrics)}
        self._pending = None
        self.record[run_record.EPOCHS].append(row)
        self.write()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush_epoch(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record[run_record.FIT_TIME] = time.perf_counter() - self._t_fit
        self.record.update(peak_memory_mb())
        self.write()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        test = {k: v for k, v in _scalars(trainer.callback_metrics).items() if k.startswith("test/")}
        self.record[run_record.TEST] = test
        self.record[run_record.STATUS] = run_record.COMPLETED
        self.record.update(peak_memory_mb())
        self.write()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not self._trained_here:  # e.g. ddp_spawn's main process: the workers wrote the rows to the file
            self._reload()
        self._flush_epoch(trainer)
        # SIGTERM (preemption) stops a run that resume= continues: not a failure of the run itself
        self.record[run_record.STATUS] = run_record.INTERRUPTED if is_preemption(exception) else run_record.FAILED
        self.record[run_record.ERROR] = f"{type(exception).__name__}: {exception}"
        self.write()
