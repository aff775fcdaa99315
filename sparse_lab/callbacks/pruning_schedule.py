"""Progressive magnitude pruning during one training run, as a thin adapter over a schedule."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from sparse_lab.errors import ConfigError
from sparse_lab.sparsity import (
    apply_masks,
    current_masks,
    current_weights,
    keep_largest,
    keep_largest_per_layer,
    mask_optimizer_state,
    prunable,
    sparsity_report,
)


class PruningSchedule(Callback):
    """At the start of each epoch (or on the schedule's update steps), keep the ``round((1 - S) N)``
    largest ``|w|`` among the active prunable weights: one global threshold (``scope="global"``) or
    per layer (``"layer"``). Masks only shrink. torch.nn.utils.prune multiplies the weights by the mask
    in every forward and so zeroes their gradients; the optimizer's momentum / moment buffers are
    masked at each pruning step too. Logs ``sparsity/global``, ``sparsity/<layer>``, ``sparsity/kept``
    every epoch.

    Resume: the masks travel in the model's state dict (the LightningModule installs them before it
    loads, see :func:`sparse_lab.sparsity.restore_masks`), the schedule is a function of epoch and
    step, and pruning again to the level in force changes nothing; the checkpoint also records
    this callback's last level and the step it pruned at (``state_dict``).
    """

    def __init__(self, schedule: Any, scope: str = "global") -> None:
        if scope not in ("global", "layer"):
            raise ConfigError(f"pruning scope={scope!r} is not one of global, layer")
        self.schedule = schedule
        self.scope = scope
        self.level = 0.0  # the sparsity last pruned to
        self.step: int | None = None  # the global step it was pruned at

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        named = prunable(getattr(pl_module, "model", pl_module))
        self.names = [n for n, _ in named]
        self.modules = [m for _, m in named]
        self.total = sum(m.weight.numel() for m in self.modules)

    def state_dict(self) -> dict[str, Any]:
        return {"level": self.level, "step": self.step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.level, self.step = float(state_dict["level"]), state_dict["step"]

    def prune_to(self, sparsity: float, trainer: L.Trainer) -> None:
        self.level, self.step = sparsity, trainer.global_step
        masks = current_masks(self.modules)
        weights = current_weights(self.modules)
        if self.scope == "global":
            new = keep_largest(weights, round((1 - sparsity) * self.total), masks)
        else:
            new = keep_largest_per_layer(weights, 1 - sparsity, masks)
        apply_masks(self.modules, new)
        for optimizer in trainer.optimizers:
            mask_optimizer_state(optimizer, [m.weight_orig for m in self.modules], current_masks(self.modules))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not getattr(self.schedule, "by_step", False):
            self.prune_to(self.schedule(trainer.current_epoch, trainer.global_step), trainer)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if getattr(self.schedule, "by_step", False) and self.schedule.is_update_step(trainer.global_step):
            self.prune_to(self.schedule(trainer.current_epoch, trainer.global_step), trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.log_dict(sparsity_report(self.names, self.modules))
