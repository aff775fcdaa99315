"""Fixed pruning masks enforced during training, as a thin Lightning adapter over :class:`MaskSet`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from sparse_lab.methods.common import inner_model  # re-exported: protocols import it from here
from sparse_lab.sparsity import MaskSet

__all__ = ["MaskEnforcer", "inner_model"]


class MaskEnforcer(Callback):
    """Keeps ``masks`` in force through every optimizer step of a fit (see :meth:`MaskSet.attach`),
    saves them in the checkpoint by parameter name, and logs ``sparsity/<layer>``,
    ``sparsity/global``, ``sparsity/kept`` and ``sparsity/effective`` (kept weights on no
    input-to-output path count as pruned) every epoch.

    Without ``masks``, a dense :class:`MaskSet` over the model's prunable parameters (``include`` /
    ``exclude``: see :func:`~sparse_lab.sparsity.prunable_parameters`) is made at setup.
    """

    def __init__(self, masks: MaskSet | None = None, include: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> None:
        self.masks = masks
        self.include = list(include) if include is not None else None
        self.exclude = list(exclude)
        self.input_shape: tuple[int, ...] | None = None  # one sample's, for the effective sparsity

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.masks is None:
            self.masks = MaskSet(inner_model(pl_module), include=self.include, exclude=self.exclude)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.masks.attach(trainer.optimizers)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.masks.detach()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if self.masks is not None:
            self.masks.detach()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.input_shape is None:
            self.input_shape = tuple(batch[0].shape[1:])

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        # Under Lightning's automatic optimization (a Trainer that clips or accumulates) the step's
        # own pre-hook runs before the closure's backward, and Lightning clips right after this hook:
        # mask here, so that the step and the clipping norm see only the kept gradients.
        if pl_module.automatic_optimization:
            self.masks.mask_gradients_early()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.log_dict(self.masks.sparsity(self.input_shape))

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # A checkpoint of the earlier prune-based code: the LightningModule found its masks in the
        # model's state dict (weight_mask keys) and left them here.
        if checkpoint.get("legacy_masks"):
            self.load_legacy_masks(checkpoint["legacy_masks"])

    def load_legacy_masks(self, masks: dict[str, Any]) -> None:
        """Install masks converted from a checkpoint of the earlier prune-based code; every prunable
        parameter the old code did not prune is kept whole."""
        self.masks.set({**self.masks.state_dict(), **masks})

    def state_dict(self) -> dict[str, Any]:
        # The input shape too: a fit resumed after its epoch's last training step trains no batch
        # before that epoch's end, where the effective sparsity needs it.
        return {"masks": self.masks.state_dict() if self.masks is not None else None, "input_shape": self.input_shape}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("masks") is not None:
            self.masks.set(state_dict["masks"])
        if state_dict.get("input_shape") is not None:
            self.input_shape = tuple(state_dict["input_shape"])
