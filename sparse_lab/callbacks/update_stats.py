"""How sparse the updates really are: gradient density, cumulative updates, parameters changed."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from sparse_lab.sparsity import count_changed, count_nonzero


class UpdateStats(Callback):
    """Logs, per epoch (and every ``log_every_n_steps`` steps to the loggers):

    - ``updates/density``: share of all parameters with a nonzero gradient when the optimizer steps
      (after any masking), averaged over the epoch's batches; ``updates/density/<layer>`` per module;
    - ``updates/cumulative``: running sum over all steps so far of the nonzero-gradient count
      (= density x n_params x steps, summed over epochs);
    - ``updates/changed``: share of parameters whose value the optimizer step changed (Adam moves
      parameters whose gradient is zero, from its moment estimates), measured on every
      ``changed_every_n_steps``-th step (0 skips it) and averaged over those steps.

    Counting happens on the device; nothing is synchronized per step except every
    ``log_every_n_steps`` steps.
    """

    def __init__(self, log_every_n_steps: int = 50, changed_every_n_steps: int = 10) -> None:
        self.log_every_n_steps = log_every_n_steps
        self.changed_every_n_steps = changed_every_n_steps
        self.cumulative = 0.0
        self._restored: dict[str, Any] | None = None  # the epoch so far, from a checkpoint written within it

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not in setup: Lightning moves the module to its device between setup and on_fit_start.
        named = [(n, p) for n, p in pl_module.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        device = self.params[0].device
        layers = [n.rsplit(".", 1)[0] for n, _ in named]
        self.layer_names = list(dict.fromkeys(layers))
        self.layer_index = torch.tensor([self.layer_names.index(name) for name in layers], device=device)
        self.sizes = torch.tensor([p.numel() for p in self.params], dtype=torch.float64, device=device)
        self.layer_sizes = torch.zeros(len(self.layer_names), dtype=torch.float64, device=device)
        self.layer_sizes.index_add_(0, self.layer_index, self.sizes)
        self.n_params = float(self.sizes.sum())
        self._before = [torch.empty_like(p) for p in self.params] if self.changed_every_n_steps else []
        self._start_epoch(self._restored)  # Lightning resuming within an epoch starts no epoch
        self._restored = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_epoch()

    def _start_epoch(self, so_far: dict[str, Any] | None = None) -> None:
        """Zero the epoch's counts, or set them to ``so_far`` (a checkpoint's)."""
        device = self.params[0].device
        so_far = so_far or {}
        self._nonzero = so_far.get("nonzero", torch.zeros(len(self.params), dtype=torch.float64)).to(device)
        self._changed = so_far.get("changed", torch.zeros((), dtype=torch.float64)).to(device)
        self._steps = so_far.get("steps", 0)
        self._changed_steps = so_far.get("changed_steps", 0)
        self._track_step = False

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        every = self.changed_every_n_steps
        self._track_step = bool(every) and self._steps % every == 0
        if self._track_step:
            torch._foreach_copy_(self._before, [p.detach() for p in self.params])

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        nonzero = count_nonzero(grads).double()  # grads are kept until the next step's zero_grad
        self._nonzero += nonzero
        changed = None
        if self._track_step:
            changed = count_changed([p.detach() for p in self.params], self._before).double()
            self._changed += changed
            self._changed_steps += 1
        self._steps += 1
        if trainer.logger is not None and self.log_every_n_steps and trainer.global_step % self.log_every_n_steps == 0:
            step = {"updates/step_density": float(nonzero.sum()) / self.n_params}
            if changed is not None:
                step["updates/step_changed"] = float(changed) / self.n_params
            trainer.logger.log_metrics(step, step=trainer.global_step)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._steps:
            self.cumulative += float(self._nonzero.sum())
            pl_module.log_dict(self.epoch_values())

    def epoch_values(self) -> dict[str, float]:
        """This epoch's density, per-layer density and changed share, and the cumulative count."""
        per_layer = torch.zeros_like(self.layer_sizes).index_add_(0, self.layer_index, self._nonzero)
        values = {
            "updates/density": float(self._nonzero.sum()) / (self.n_params * self._steps),
            "updates/cumulative": self.cumulative,
            **{f"updates/density/{name}": float(v) for name, v in zip(self.layer_names, per_layer / (self.layer_sizes * self._steps))},
        }
        if self._changed_steps:
            values["updates/changed"] = float(self._changed) / (self.n_params * self._changed_steps)
        return values

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"cumulative": self.cumulative}
        if hasattr(self, "_steps"):
            state["epoch"] = {"nonzero": self._nonzero.cpu(), "changed": self._changed.cpu(), "steps": self._steps,
                              "changed_steps": self._changed_steps}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.cumulative = state_dict["cumulative"]
        self._restored = state_dict.get("epoch")
