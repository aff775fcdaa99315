"""A callback for the benchmarks: the wall time of every training step of a sparse_lab run, so that a
step time excludes what happens once (scoring at initialization, first calls of compiled kernels)."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import lightning as L


class StepTimer(L.Callback):
    """Writes ``{"step_s": [...]}`` to ``out`` at each training epoch's end: the time from one training
    batch's start to the next's, for every step of that epoch but its last."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.starts: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.starts = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object, batch_idx: int) -> None:
        self.starts.append(time.perf_counter())

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        steps = [b - a for a, b in zip(self.starts, self.starts[1:])]
        self.out.write_text(json.dumps({"step_s": steps}))


def timer_overrides(out: str) -> list[str]:
    """Hydra overrides that add a :class:`StepTimer` writing to ``out`` to a run's callbacks."""
    return [f"+callbacks.step_timer._target_={__name__}.StepTimer", f"+callbacks.step_timer.out={out}"]


def steady_step_ms(out: str, skip: int = 10) -> float:
    """Mean step time (ms) written by a :class:`StepTimer` to ``out``, without the first ``skip`` steps."""
    steps = json.loads(Path(out).read_text())["step_s"][skip:]
    if not steps:
        raise ValueError(f"{out}: no step after the first {skip}")
    return statistics.fmean(steps) * 1e3
