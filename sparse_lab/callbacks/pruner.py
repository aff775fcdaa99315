"""Pruning during training: a score, a schedule and a selection scope over a :class:`MaskSet`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch

from sparse_lab.callbacks.masking import MaskEnforcer
from sparse_lab.checks import is_int, one_of, require
from sparse_lab.models.reinit import reinitialize, seeded
from sparse_lab.sparsity import MaskSet, scores
from sparse_lab.sparsity.select import SCOPES, select, shuffle_within_layers

Score = Callable[..., dict]
REINIT_SEED_OFFSET = 1  # the fresh draw of reinit=True: another stream than the run's seed drew the first init from


class Pruner(MaskEnforcer):
    """At the start of each epoch (or on the schedule's update steps, with the step's batch), keep
    the ``round((1 - S) N)`` highest ``score`` entries among the active ones, ``S`` the schedule's
    sparsity: one threshold over all tensors (``scope="global"``), per layer (``"layer"``), or by a
    layer-wise distribution (``"er"``, ``"erk"``); in ``rounds`` exponential steps, scoring again
    after each (SynFlow). Masks only shrink. ``shuffle="layer"``: after pruning, each layer's mask
    is permuted at random (seeded by ``seed``), keeping its count, and the kept weights take the
    values they had before pruning (the layer-shuffle control of pruning at initialization).
    ``reinit=True``: after pruning, the model's parameters are drawn afresh with its own init
    (seeded by ``seed``) and the masks applied to them: the mask is scored on one draw and trained
    on another, as SNIP's reference code does (and the random-reinit control of a mask found at
    initialization). Everything :class:`MaskEnforcer` does besides: masks enforced around every optimizer step, saved in the checkpoint, logged.

    Resume: the masks travel in this callback's checkpoint state; the schedule is a function of
    epoch and step, and pruning again to the level in force changes nothing. The state also records
    the last level and the step it pruned at.
    """

    def __init__(
        self,
        schedule: Any,
        score: Score = scores.magnitude,
        scope: str = "global",
        masks: MaskSet | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        rounds: int = 1,
        shuffle: str | None = None,
        seed: int = 0,
        reinit: bool = False,
    ) -> None:
        one_of("method.callbacks.pruner.scope", scope, SCOPES)
        require(is_int(rounds, 1), "method.callbacks.pruner.rounds", rounds, "an integer >= 1")
        one_of("mask.shuffle", shuffle, (None, "layer"))
        require(isinstance(reinit, bool), "mask.reinit", reinit, "true or false")
        super().__init__(masks, include, exclude)
        self.schedule = schedule
        self.score = score
        self.scope = scope
        self.rounds = rounds
        self.shuffle, self.seed, self.reinit = shuffle, seed, reinit
        self.prune_time_s = 0.0  # wall time spent scoring and selecting this epoch (logged as pruning/time_s)
        self.level = 0.0  # the sparsity last pruned to
        self.step: int | None = None  # the global step it was pruned at

    def prune_to(self, sparsity: float, trainer: L.Trainer, batch: Any = None) -> None:
        """Keep ``1 - sparsity`` of the entries by score, among the active ones; with ``rounds=n``, in
        n steps whose densities fall exponentially from the current one, scoring again after each."""
        t0 = time.perf_counter()
        self._prune(sparsity, trainer, batch)
        self.prune_time_s += time.perf_counter() - t0

    def _prune(self, sparsity: float, trainer: L.Trainer, batch: Any) -> None:
        self.level, self.step = sparsity, trainer.global_step
        current, target = self.masks.kept / self.masks.total, 1 - sparsity
        if target >= current:
            return  # masks only shrink; an update to the level in force changes nothing
        before = {n: w.clone() for n, w in self.masks.weights().items()} if self.shuffle else None
        for k in range(1, self.rounds + 1):
            density = target if k == self.rounds else current * (target / current) ** (k / self.rounds)
            ranked = self.score(self.masks, batch)
            self.masks.update(select(ranked, density, self.scope, active=self.masks.masks))
        if before is not None:  # the control: the same per-layer counts at shuffled positions, weights as they were
            generator = torch.Generator().manual_seed(self.seed)
            self.masks.update(shuffle_within_layers(self.masks.masks, generator))
            self.masks.assign({n: w * self.masks.masks[n] for n, w in before.items()})
        if self.reinit:
            with seeded(self.seed + REINIT_SEED_OFFSET):
                reinitialize(self.masks.model)
            self.masks.apply()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not getattr(self.schedule, "by_step", False):
            self.prune_to(self.schedule(trainer.current_epoch, trainer.global_step), trainer)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        if getattr(self.schedule, "by_step", False) and self.schedule.is_update_step(trainer.global_step):
            self.prune_to(self.schedule(trainer.current_epoch, trainer.global_step), trainer, batch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        pl_module.log("pruning/time_s", self.prune_time_s)
        self.prune_time_s = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "level": self.level, "step": self.step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.level, self.step = float(state_dict["level"]), state_dict["step"]
