"""The default protocol: one fit, then the test set."""

from __future__ import annotations

from typing import TypeVar

import lightning as L
from lightning.pytorch.callbacks import Callback

C = TypeVar("C", bound=Callback)


def find_callback(trainer: L.Trainer, cls: type[C]) -> C | None:
    """The trainer's first callback of type ``cls``, if any."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, cls)), None)


class Train:
    """Fit ``module`` on ``datamodule`` (resuming from ``ckpt_path`` if given), then test it."""

    def run(
        self, trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule, ckpt_path: str | None = None
    ) -> dict[str, float]:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        results = trainer.test(module, datamodule=datamodule, verbose=False)
        return {k: float(v) for k, v in results[0].items()} if results else {}
