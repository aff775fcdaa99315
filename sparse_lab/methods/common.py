"""What every LightningModule of :mod:`sparse_lab.methods` shares, and what callbacks and protocols
ask of any of them: the optimizer and scheduler factories' types, the stage a validation loader
logs under, the non-finite-loss stop, and the plain model inside a module."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import nn

from sparse_lab.errors import SparseLabError

# Hydra partials (``_partial_: true``) completed in configure_optimizers.
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


class NonFiniteLossError(SparseLabError):
    """Training loss became NaN or infinite."""


def check_finite_loss(loss: float, epoch: int) -> None:
    """Raise :class:`NonFiniteLossError` with the fix when an epoch's training loss is NaN or infinite."""
    if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"training loss is {loss} in epoch {epoch}: the run stopped, and the last finite checkpoint and "
            "metrics.json were kept. Try a smaller lr= or check the data."
        )


def eval_stage(module: L.LightningModule, dataloader_idx: int) -> str:
    """The stage a validation loader logs under: the datamodule's ``val_loader_names``, else ``val``."""
    names = getattr(module.trainer.datamodule, "val_loader_names", None) if module._trainer is not None else None
    return names[dataloader_idx] if names else "val"


def inner_model(pl_module: L.LightningModule) -> nn.Module:
    """The plain model a LightningModule trains (its ``model`` attribute), or the module itself."""
    return getattr(pl_module, "model", pl_module)
