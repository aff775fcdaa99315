"""Dynamic sparse training (SET, RigL): masks that move during training at a fixed density."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch

from sparse_lab.callbacks.masking import MaskEnforcer
from sparse_lab.checks import is_int, is_number, one_of, require
from sparse_lab.sparsity import MaskSet, scores, select
from sparse_lab.sparsity.dynamic import DropFraction
from sparse_lab.sparsity.select import SCOPES, drop_and_grow

GROWTH = ("random", "gradient")
DISTRIBUTIONS = SCOPES[2:]  # the layer-wise densities: uniform, er, erk


class DynamicSparsity(MaskEnforcer):
    """Random sparse masks at ``sparsity`` with a layer-wise ``distribution`` (``uniform``, ``er``,
    ``erk``) on the first training step, then, on every update, per layer: drop the fraction
    ``drop_fraction(t, t_end)`` of the active weights with the smallest ``|w|`` and grow as many
    among the entries not kept, ``growth="random"`` (SET) or where the step's dense gradient is
    largest (``"gradient"``, RigL). Grown weights start at 0 with zeroed optimizer state; every layer
    keeps its count.

    Updates: after every ``update_every`` optimizer steps (RigL's delta_t; the update follows that
    step's optimizer update, and the grown weights join from the next step), or with
    ``update_every=None`` at the end of every epoch (SET), until ``end`` (a fraction of the
    trainer's total steps). The growth generator is seeded with ``seed`` and saved in checkpoints.
    """

    def __init__(
        self,
        sparsity: float,
        distribution: str = "erk",
        growth: str = "gradient",
        drop_fraction: DropFraction | None = None,
        update_every: int | None = 100,
        end: float = 0.75,
        seed: int = 0,
        masks: MaskSet | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
    ) -> None:
        key = "method.callbacks.dynamic_sparsity."
        require(is_number(sparsity, 0) and sparsity < 1, "sparsity", sparsity, "a number in [0, 1)")
        one_of(key + "distribution", distribution, DISTRIBUTIONS)
        one_of(key + "growth", growth, GROWTH)
        require(update_every is None or is_int(update_every, 1), key + "update_every", update_every,
                "an integer >= 1 (optimizer steps) or null (every epoch)")
        require(is_number(end, 0, 1, open_low=True), key + "end", end, "a fraction of training in (0, 1]")
        super().__init__(masks, include, exclude)
        self.sparsity, self.distribution, self.growth = sparsity, distribution, growth
        self.drop_fraction = drop_fraction or DropFraction()
        self.update_every, self.end, self.seed = update_every, end, seed
        self.started = False
        self.updates = 0
        self.moved_at = -1  # the optimizer step of the last move: with accumulate_grad_batches, several batches end on one step
        self.end_step = 1  # t_end in optimizer steps, set when training starts
        # Made in on_fit_start: a torch.Generator does not survive ddp_spawn's pickling into the workers.
        self.generator: torch.Generator | None = None
        self._generator_state: torch.Tensor | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        self.generator = torch.Generator().manual_seed(self.seed)
        if self._generator_state is not None:
            self.generator.set_state(self._generator_state)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # t_end in optimizer steps, once a fit: estimated_stepping_batches is not free per batch.
        self.end_step = max(1, int(self.end * trainer.estimated_stepping_batches))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        if not self.started:
            self.started = True
            initial = scores.random(self.masks, seed=self.seed)
            self.masks.update(select(initial, 1 - self.sparsity, self.distribution, active=self.masks.masks))
        self.masks.keep_dense_grads = self.growth == "gradient" and self._is_update_step(trainer.global_step + 1)

    def _is_update_step(self, step: int) -> bool:
        """Whether the masks move after optimizer step number ``step`` (counted from 1)."""
        return self.update_every is not None and 0 < step < self.end_step and step % self.update_every == 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._is_update_step(trainer.global_step) and trainer.global_step != self.moved_at:
            self.move(trainer.global_step)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.update_every is None and trainer.global_step < self.end_step:
            self.move(trainer.global_step)
        super().on_train_epoch_end(trainer, pl_module)

    def move(self, step: int) -> int:
        """Drop and grow once at ``step`` (of ``end_step``); the number of entries moved."""
        fraction = self.drop_fraction(step, self.end_step)
        if self.growth == "gradient":
            grow = scores.gradient_magnitude(self.masks)
        else:
            grow = {n: torch.rand(m.shape, generator=self.generator).to(m.device) for n, m in self.masks.masks.items()}
        new, moved = drop_and_grow(self.masks.masks, scores.magnitude(self.masks), grow, fraction)
        self.masks.update(new, grow_value=0.0)
        self.masks.keep_dense_grads, self.masks.dense_grads = False, None
        self.updates, self.moved_at = self.updates + 1, step
        return moved

    def state_dict(self) -> dict[str, Any]:
        state = self.generator.get_state() if self.generator is not None else self._generator_state
        return {**super().state_dict(), "started": self.started, "updates": self.updates, "moved_at": self.moved_at,
                "generator": state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.started, self.updates = state_dict["started"], state_dict["updates"]
        self.moved_at = state_dict.get("moved_at", -1)
        self._generator_state = state_dict["generator"]
        if self.generator is not None and self._generator_state is not None:
            self.generator.set_state(self._generator_state)
