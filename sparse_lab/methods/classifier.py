"""Supervised classification: the LightningModule that dense and sparse methods train through."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from sparse_lab.checks import is_int, is_number, one_of, require
from sparse_lab.errors import SparseLabError
from sparse_lab.methods.common import OptimizerFactory, SchedulerFactory, check_finite_loss, eval_stage
from sparse_lab.sparsity.legacy import convert_pruned_state_dict

STAGES = ("train", "val", "test")


class Classifier(L.LightningModule):
    """Cross-entropy training of ``model`` with accuracy and loss per stage.

    ``optimizer`` and ``scheduler`` are partials (Hydra ``_partial_: true``) completed in
    :meth:`configure_optimizers`. Logged keys: ``{train,val,test}/{loss,acc}``, one value per epoch;
    a non-finite training loss stops the run with :class:`NonFiniteLossError`.
    Validation loaders are named by the datamodule's ``val_loader_names`` (e.g. ``["val", "test"]``),
    so a test pass after every epoch logs under ``test/``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerFactory,
        num_classes: int,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "epoch",
        label_smoothing: float = 0.0,
        metric_update_every: int = 64,
    ) -> None:
        super().__init__()
        one_of("method.module.scheduler_interval", scheduler_interval, ("epoch", "step"))
        require(is_int(metric_update_every, 1), "method.module.metric_update_every", metric_update_every,
                "an integer >= 1 (steps whose predictions one metric update takes)")
        require(is_number(label_smoothing, 0) and label_smoothing < 1, "method.module.label_smoothing", label_smoothing,
                "a number in [0, 1)")
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        # Per-stage running aggregates, logged once per epoch: Lightning's per-step ``self.log`` costs
        # more than a small model's whole training step. A step only queues its predicted labels,
        # targets and loss; the metrics get them in one update every ``metric_update_every`` steps
        # and before every compute. Two metric updates a step are a dozen small tensor ops, which run
        # slowly inside a training loop: a noticeable share of a small MLP's step (docs/speed.md).
        self.metric_update_every = metric_update_every
        self._queued: dict[str, list[tuple[Tensor, Tensor, Tensor]]] = {stage: [] for stage in STAGES}
        for stage in STAGES:
            setattr(self, f"{stage}_acc", MulticlassAccuracy(num_classes, average="micro", validate_args=False))
            setattr(self, f"{stage}_loss", MeanMetric(nan_strategy="disable"))  # keep NaN visible

    @property
    def automatic_optimization(self) -> bool:
        """Manual optimization unless the Trainer clips (``gradient_clip_val``) or accumulates
        (``accumulate_grad_batches``) gradients: then Lightning's own loop does both, as users know them.

        Lightning's automatic closure costs a small model a noticeable share of its step (docs/speed.md);
        the manual step fires the same hooks in the same order: on_before_backward,
        on_after_backward, on_before_optimizer_step.
        """
        trainer = self._trainer
        return trainer is not None and (bool(trainer.gradient_clip_val) or trainer.accumulate_grad_batches != 1)

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets _current_fx_name around every hook call (about 40 times a step); a plain
        # string needs none of nn.Module.__setattr__'s parameter and submodule bookkeeping.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self.model(x)
        loss = self.loss_fn(logits, y)
        queue = self._queued[stage]
        queue.append((logits.detach().argmax(1), y, loss.detach()))
        if len(queue) >= self.metric_update_every:
            self._update_metrics(stage)
        return loss

    def _update_metrics(self, stage: str) -> None:
        """Hand the queued steps of ``stage`` to its metrics in one update each."""
        queue = self._queued[stage]
        if not queue:
            return
        preds, targets, losses = zip(*queue)
        queue.clear()
        getattr(self, f"{stage}_acc").update(torch.cat(preds), torch.cat(targets))
        # One value per sample, so that the epoch's loss is the mean over samples, also over ranks and
        # with a short last batch: MeanMetric(nan_strategy="disable") ignores a weight argument
        # (torchmetrics replaces it by ones), which would average the batch means instead.
        getattr(self, f"{stage}_loss").update(torch.cat([loss.expand(len(y)) for loss, y in zip(losses, targets)]))

    def _log_epoch(self, stage: str) -> None:
        self._update_metrics(stage)
        acc, loss = getattr(self, f"{stage}_acc"), getattr(self, f"{stage}_loss")
        if acc.update_count == 0:
            return
        values = {f"{stage}/loss": loss.compute(), f"{stage}/acc": acc.compute()}
        acc.reset()
        loss.reset()
        self.log_dict(values, prog_bar=stage != "train")
        if stage == "train":
            check_finite_loss(float(values["train/loss"]), self.current_epoch)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        if self.automatic_optimization:
            return self._shared_step(batch, "train")
        optimizer = self.optimizers()
        loss = self._shared_step(batch, "train")
        optimizer.zero_grad()
        self.manual_backward(loss)  # fires on_before_backward / on_after_backward
        optimizer.step()  # fires on_before_optimizer_step, then steps
        if self.scheduler_interval == "step":
            self._step_scheduler()
        return loss.detach()

    def _step_scheduler(self) -> None:
        scheduler = self.lr_schedulers()
        if scheduler is not None and not self.automatic_optimization:  # Lightning steps it in automatic mode
            scheduler.step()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._shared_step(batch, self._val_stage(dataloader_idx))

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def _val_stage(self, dataloader_idx: int) -> str:
        return eval_stage(self, dataloader_idx)

    def on_fit_start(self) -> None:
        # A module fitted again after trainer.test (lottery rounds) holds metric states created
        # in inference mode, which cannot be updated in place during training: recreate them.
        for stage in STAGES:
            self._queued[stage].clear()
            getattr(self, f"{stage}_acc").reset()
            getattr(self, f"{stage}_loss").reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")
        if self.scheduler_interval == "epoch":
            self._step_scheduler()

    def on_validation_epoch_end(self) -> None:
        for stage in ("val", "test"):
            self._log_epoch(stage)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning calls this before load_state_dict and before the callbacks' on_load_checkpoint.
        # A checkpoint of the earlier prune-based code holds weight_orig / weight_mask: load its plain
        # weights, and leave its masks where the mask callbacks (MaskEnforcer, Pruner) pick them up.
        state, masks = convert_pruned_state_dict(checkpoint["state_dict"])
        if not masks:
            return
        callbacks = self.trainer.callbacks if self._trainer is not None else []
        if not any(hasattr(cb, "load_legacy_masks") for cb in callbacks):
            raise SparseLabError(
                "this checkpoint was written by an earlier sparse_lab whose pruning kept masks in the model "
                "(weight_mask keys); resume it with a pruning method (e.g. method=progressive), which converts them"
            )
        checkpoint["state_dict"] = state
        checkpoint["legacy_masks"] = {k.removeprefix("model."): v for k, v in masks.items()}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        # ddp_spawn hands trained weights back with load_state_dict, not through on_load_checkpoint.
        state, _ = convert_pruned_state_dict(state_dict)
        return super().load_state_dict(state, strict=strict, assign=assign)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = {"scheduler": self.scheduler_factory(optimizer), "interval": self.scheduler_interval}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
