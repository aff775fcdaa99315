"""NoProp against backprop: four LightningModules over the models in :mod:`sparse_lab.models.noprop`.

- :class:`NoPropDT`: the paper's discrete-time NoProp; each block has its own optimizer and is
  trained on its own denoising loss from ``z_{t-1} ~ q(. | y)``, so no gradient crosses blocks.
- :class:`NoPropDTBackprop`: the same blocks chained as at inference, trained end to end on the summed loss.
- :class:`NoPropShared`: the shared-encoder variant (encoder through frozen denoisers, then each denoiser).
- :class:`NoPropSharedBackprop`: its end-to-end twin.

All four evaluate the same way: several stochastic inference chains per image, run at once
(``epoch_eval_runs`` in the per-epoch evaluation, ``eval_runs`` in the final test);
``{stage}/acc`` is the mean accuracy over the runs and ``{stage}/acc_std`` their standard deviation.
Evaluation reads images only; labels only score the predictions.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from sparse_lab.checks import is_int, one_of, require
from sparse_lab.errors import ConfigError
from sparse_lab.methods.common import OptimizerFactory, check_finite_loss, eval_stage
from sparse_lab.models.noprop import NoPropDTModel, NoPropSharedModel

EVAL_STAGES = ("val", "test")
ORDERS = ("batch", "block")


class DenoisingClassifier(L.LightningModule):
    """What the NoProp methods share: evaluation over several inference runs, per-block loss
    logging, an optimizer-step counter, and a training noise generator saved in checkpoints.

    Lightning's ``global_step`` counts every optimizer's steps (T + 1 per batch for NoProp-DT), so
    ``train/optimizer_steps`` and ``train/batches`` come from this module's own counters.
    """

    # Declarations that config validation reads (sparse_lab.validation.dedicated_models): the model
    # class this method alone can train (None: any), and this method's option in conf/method/.
    model_type: type[nn.Module] | None = None
    method_name = "noprop"

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerFactory,
        num_classes: int,
        eval_runs: int = 5,
        epoch_eval_runs: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        if self.model_type is not None and not isinstance(model, self.model_type):
            raise ConfigError(
                f"method={self.method_name} needs its own model: add model={self.model_type.config_option} "
                f"(got {type(model).__name__})"
            )
        require(is_int(eval_runs, 1), "method.module.eval_runs", eval_runs,
                "an integer >= 1 (stochastic inference runs in the final test)")
        require(is_int(epoch_eval_runs, 1), "method.module.epoch_eval_runs", epoch_eval_runs,
                "an integer >= 1 (stochastic inference runs per epoch)")
        self.model = model
        self.optimizer_factory = optimizer
        self.eval_runs = eval_runs
        self.epoch_eval_runs = epoch_eval_runs
        self._runs = eval_runs
        self.seed = seed
        self.optimizer_steps = 0
        self.batches = 0
        self.noise: torch.Generator | None = None
        self._restored: dict[str, Any] | None = None
        runs = max(eval_runs, epoch_eval_runs)
        for stage in EVAL_STAGES:
            metrics = [MulticlassAccuracy(num_classes, average="micro", validate_args=False) for _ in range(runs)]
            setattr(self, f"{stage}_acc", nn.ModuleList(metrics))
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.block_mse = nn.ModuleList(MeanMetric() for _ in range(model.steps))
        # Per-block denoising loss weights, where the model's schedule defines them (NoProp-DT).
        self._weights = [float(w) for w in getattr(model.schedule, "loss_weight", ())]

    # ---- training helpers ----
    def _step(self, optimizer: Any, loss: Tensor, zero_grad: bool = True) -> None:
        """Backward ``loss`` (after zeroing ``optimizer``'s gradients, unless told not to), then a counted step."""
        if zero_grad:
            optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        self.optimizer_steps += 1

    def _record(self, total: Tensor, block_mse: dict[int, Tensor]) -> None:
        self.batches += 1
        self.train_loss.update(total.detach())
        for t, mse in block_mse.items():
            self.block_mse[t - 1].update(mse.detach())

    def on_fit_start(self) -> None:
        for metric in [*self.val_acc, *self.test_acc, self.train_loss, *self.block_mse]:
            metric.reset()
        self.noise = torch.Generator(device=self.device).manual_seed(self.seed)

    def on_train_start(self) -> None:
        if self._restored is not None:  # continue the exact random streams of the interrupted run
            self.noise.set_state(self._restored["noise"])
            torch.set_rng_state(self._restored["torch_rng"])
            if self._restored.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state(self._restored["cuda_rng"], self.device)
            self._restored = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["noprop"] = {
            "optimizer_steps": self.optimizer_steps,
            "batches": self.batches,
            "noise": self.noise.get_state() if self.noise is not None else None,
            "torch_rng": torch.get_rng_state(),  # dropout draws from the global generator
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("noprop")
        if state is not None:
            self.optimizer_steps, self.batches = state["optimizer_steps"], state["batches"]
            self._restored = state if state["noise"] is not None else None

    def on_train_epoch_end(self) -> None:
        if self.train_loss.update_count == 0:
            return
        values = {"train/loss": self.train_loss.compute()}
        for t, metric in enumerate(self.block_mse, start=1):
            if metric.update_count:
                values[f"train/block_mse/{t:02d}"] = metric.compute()
            metric.reset()
        self.train_loss.reset()
        values["train/optimizer_steps"] = float(self.optimizer_steps)
        values["train/batches"] = float(self.batches)
        self.log_dict(values)
        check_finite_loss(float(values["train/loss"]), self.current_epoch)

    # ---- evaluation: images in, predictions out ----
    def predict(self, x: Tensor, generator: torch.Generator | None = None, runs: int | None = None) -> Tensor:
        """Predicted classes of ``runs`` (default ``eval_runs``) stochastic inference runs, ``(runs, batch)``.

        Reads only ``x``.
        """
        return self.model.predict_logits(x, generator, runs or self.eval_runs).argmax(dim=-1)

    def _eval_step(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        x, y = batch
        predictions = self.predict(x, self._eval_generator, self._runs)
        for metric, pred in zip(getattr(self, f"{stage}_acc"), predictions):
            metric.update(pred, y)

    def _start_eval(self, runs: int) -> None:
        self._runs = runs
        # The same noise at every evaluation: evaluations differ only by the weights.
        self._eval_generator = torch.Generator(device=self.device).manual_seed(self.seed + 1)

    def _log_eval(self, stage: str) -> None:
        metrics = getattr(self, f"{stage}_acc")[: self._runs]
        if metrics[0].update_count == 0:
            return
        accs = torch.stack([m.compute() for m in metrics])
        for m in metrics:
            m.reset()
        std = accs.std() if len(accs) > 1 else torch.zeros(())
        self.log_dict({f"{stage}/acc": accs.mean(), f"{stage}/acc_std": std}, prog_bar=stage != "train")

    def on_validation_epoch_start(self) -> None:
        self._start_eval(self.epoch_eval_runs)

    def on_test_epoch_start(self) -> None:
        self._start_eval(self.eval_runs)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, eval_stage(self, dataloader_idx))

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        for stage in EVAL_STAGES:
            self._log_eval(stage)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")


class NoPropDT(DenoisingClassifier):
    """NoProp-DT (Li, Teh, Pascanu 2025): T blocks, T + 1 optimizers, no gradient between blocks.

    Block ``t``'s loss: ``T/2 * eta * (SNR(t) - SNR(t-1)) * ||u_hat_t(z_{t-1}, x) - u_y||^2`` with
    ``z_{t-1} ~ q(. | y)``, stepped by block ``t``'s optimizer. The head and a learned embedding
    have the last optimizer, stepped on the head's cross-entropy on ``z_T ~ q(. | y)`` plus the KL
    term (a learned embedding also receives the blocks' loss gradients through ``u_y``).

    ``order="batch"``: every batch trains all blocks. ``order="block"`` (the paper's Algorithm 1):
    the run's epochs are split evenly, block 1 trains on all data for ``epochs / T`` epochs, then
    block 2, ...; ``epochs`` must then be a multiple of T.
    """

    model_type = NoPropDTModel
    method_name = "noprop_dt"

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerFactory,
        num_classes: int,
        order: str = "batch",
        eval_runs: int = 5,
        epoch_eval_runs: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(model, optimizer, num_classes, eval_runs, epoch_eval_runs, seed)
        one_of("method.module.order", order, ORDERS)
        self.order = order

    def on_train_start(self) -> None:
        super().on_train_start()
        epochs, steps = self.trainer.max_epochs, self.model.steps
        if self.order == "block" and (epochs is None or epochs < steps or epochs % steps):
            raise ConfigError(
                f"order=block trains the {steps} blocks one after another over equal shares of the epochs: "
                f"epochs must be a multiple of {steps}, got epochs={epochs}"
            )

    def active_blocks(self) -> list[int]:
        """The blocks (from 1) trained in the current epoch."""
        steps = self.model.steps
        if self.order == "batch":
            return list(range(1, steps + 1))
        return [self.current_epoch * steps // self.trainer.max_epochs + 1]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        model = self.model
        *block_optimizers, head_optimizer = self.optimizers()
        head_optimizer.zero_grad()  # a learned embedding collects gradients from every loss below
        total, block_mse = torch.zeros((), device=x.device), {}
        for t in self.active_blocks():
            u = model.targets(y)
            z = model.schedule.sample(u, t - 1, self.noise)
            mse = (model.blocks[t - 1](x, z, model.embed) - u).square().sum(dim=1).mean()
            loss = self._weights[t - 1] * mse
            self._step(block_optimizers[t - 1], loss)
            total, block_mse[t] = total + loss.detach(), mse
        u = model.targets(y)
        z_last = model.schedule.sample(u, model.steps, self.noise)
        head_loss = F.cross_entropy(model.head(z_last), y) + model.schedule.kl_to_prior(u).mean()
        self._step(head_optimizer, head_loss, zero_grad=False)
        total = total + head_loss.detach()
        self._record(total, block_mse)
        return total

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        model = self.model
        head_params = [*model.head.parameters(), *([model.embed] if isinstance(model.embed, nn.Parameter) else [])]
        return [*(self.optimizer_factory(block.parameters()) for block in model.blocks), self.optimizer_factory(head_params)]


class BackpropTwin(DenoisingClassifier):
    """What both backprop twins share: one optimizer over the whole model, one backward of the summed loss."""

    def summed_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[int, Tensor]]:
        """The loss to minimise end to end, and each block's MSE (keyed from 1) for logging."""
        raise NotImplementedError

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, block_mse = self.summed_loss(*batch)
        self._step(self.optimizers(), loss)
        self._record(loss, block_mse)
        return loss.detach()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.model.parameters())


class NoPropDTBackprop(BackpropTwin):
    """The backprop twin of :class:`NoPropDT`: the blocks chained from ``z_0 ~ N(0, I)`` by the
    inference update, one optimizer, one backward of the summed loss (every block's weighted
    denoising loss on the chain's own ``z_{t-1}``, the head's cross-entropy on ``z_T``, the KL term).
    """

    model_type = NoPropDTModel
    method_name = "noprop_backprop"

    def summed_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[int, Tensor]]:
        model = self.model
        u = model.targets(y)
        noise = torch.randn((model.steps + 1, *u.shape), generator=self.noise, device=x.device, dtype=u.dtype)
        z, loss, block_mse = noise[0], torch.zeros((), device=x.device), {}
        for t, block in enumerate(model.blocks, start=1):
            u_hat = block(x, z, model.embed)
            block_mse[t] = (u_hat - u).square().sum(dim=1).mean()
            loss = loss + self._weights[t - 1] * block_mse[t]
            z = model.step(t, z, u_hat, noise[t])
        loss = loss + F.cross_entropy(model.head(z), y) + model.schedule.kl_to_prior(u).mean()
        return loss, block_mse


class NoPropShared(DenoisingClassifier):
    """The shared-encoder NoProp of the seed comparison. Per batch: draw the forward chain
    ``z_1..z_T`` from the one-hot label; train the encoder through the frozen denoisers on the
    summed MSE; then, with the updated encoder's features recomputed under ``no_grad``, each
    denoiser on its own MSE.

    The denoisers' updates are one backward of their summed losses and one Adam step over all their
    parameters: with features and ``z_t`` constant, no denoiser's loss depends on another's
    parameters, so each receives exactly its own loss's gradient, and Adam updates every element on
    its own, which makes this equal to T separate backward passes and optimizers (tested) at a
    fraction of the per-step overhead. Two optimizer steps per batch.
    """

    model_type = NoPropSharedModel
    method_name = "noprop_shared"

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        model = self.model
        encoder_optimizer, denoiser_optimizer = self.optimizers()
        u = model.targets(y)
        zs = model.schedule.chain(u, self.noise)
        features = model.features(x)
        model.denoisers.requires_grad_(False)  # frozen: gradients reach the encoder only
        encoder_loss = sum(model.block_mse(features, zs, u).values())
        self._step(encoder_optimizer, encoder_loss)
        model.denoisers.requires_grad_(True)
        with torch.no_grad():
            features = model.features(x)
        block_mse = model.block_mse(features, zs, u)
        denoiser_loss = sum(block_mse.values())
        self._step(denoiser_optimizer, denoiser_loss)
        total = encoder_loss.detach() + denoiser_loss.detach()
        self._record(total, block_mse)
        return total

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        model = self.model
        return [self.optimizer_factory(model.encoder.parameters()), self.optimizer_factory(model.denoisers.parameters())]


class NoPropSharedBackprop(BackpropTwin):
    """The backprop twin of :class:`NoPropShared`: encoder and denoisers end to end on the summed MSE."""

    model_type = NoPropSharedModel
    method_name = "noprop_shared_backprop"

    def summed_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[int, Tensor]]:
        model = self.model
        u = model.targets(y)
        zs = model.schedule.chain(u, self.noise)
        block_mse = model.block_mse(model.features(x), zs, u)
        return sum(block_mse.values()), block_mse
