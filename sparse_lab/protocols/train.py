"""The default protocol: one fit, then the test set."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import lightning as L
from lightning.pytorch.callbacks import Callback

from sparse_lab.errors import ConfigError

C = TypeVar("C", bound=Callback)
TrainerFactory = Callable[..., L.Trainer]  # (run_dir, extra_callbacks=()) -> a fresh Trainer


def find_callback(trainer: L.Trainer, cls: type[C]) -> C | None:
    """The trainer's first callback of type ``cls``, if any."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, cls)), None)


def resume_checkpoint(resume: str | None) -> str | None:
    """The checkpoint that ``resume=`` names: a ``.ckpt`` file, or a run dir's ``checkpoints/last.ckpt``."""
    if not resume:
        return None
    path = Path(resume)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise ConfigError(
            f"resume={resume} has no checkpoint ({path} not found): give a run dir that holds "
            "checkpoints/last.ckpt, or the path of a .ckpt file"
        )
    return str(path)


def fit_and_test(
    trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule, ckpt_path: str | None = None
) -> dict[str, float]:
    """Fit (resuming from ``ckpt_path`` if given), then test; the test metrics."""
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    results = trainer.test(module, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in results[0].items()} if results else {}


class Train:
    """Fit ``module`` on ``datamodule`` once, then test it. ``resume=`` continues from a checkpoint."""

    def check_resume(self, resume: str | None) -> None:
        resume_checkpoint(resume)

    def run(
        self,
        make_trainer: TrainerFactory,
        module: L.LightningModule,
        datamodule: L.LightningDataModule,
        out_dir: Path,
        resume: str | None = None,
    ) -> dict[str, float]:
        return fit_and_test(make_trainer(out_dir), module, datamodule, resume_checkpoint(resume))
