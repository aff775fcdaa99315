"""Random-walk gradient masking as a thin Lightning adapter over :class:`RandomWalkMask`."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from sparse_lab.checks import one_of
from sparse_lab.errors import ConfigError
from sparse_lab.methods.common import inner_model
from sparse_lab.sparsity import (
    RandomWalkMask,
    edge_masks,
    keep_edge_gradients,
    linear_chain,
    use_row_sparse_backward,
)

BACKWARDS = ("dense", "rows", "edges")


class RandomWalkGradientMask(Callback):
    """Each training step, keep only the gradients of the weights that ``sampler``'s walks mark.

    ``backward="dense"`` (the reference): dense backward, then the walk over the current weights
    picks edges, and every other gradient is zeroed before the optimizer step.
    ``backward="rows"``: the walk is drawn before backward; backward computes only the visited
    rows, the signal to lower layers flows only through them, and whole rows are kept.
    ``backward="edges"``: the walk is drawn before backward (with ``bias="weight"`` or
    ``"uniform"`` it depends only on the weights, the labels and the generator, so these are the
    edges ``"dense"`` draws after it); backward sends the dense signal down but computes the weight
    gradients on the walked edges only (one dot product over the batch per edge) and the bias
    gradients on the visited rows: the gradients of ``"dense"``, without its weight-gradient GEMMs.
    The walk's generator is seeded with ``seed`` and saved in checkpoints.

    Logs, per epoch, the updates counted as the random-walk papers count them, whatever the
    backward: ``updates/rows_x_fan_in``, the weights in the rows the step's walk visited (each
    visited row of a layer counts its fan-in), averaged over the epoch's steps, and
    ``updates/cumulative_rows_x_fan_in``, its running sum over all steps so far (beside
    :class:`UpdateStats`' nonzero-gradient counts, which are smaller under ``"dense"`` and
    ``"edges"``: one weight per walked edge).

    Data parallel: every rank must apply the same mask, or the replicas drift apart. The walk is
    a function of the generator (same seed on every rank), the weights (kept identical by DDP),
    the gradients for ``bias="gradient"`` (read after DDP's all-reduce, in
    ``on_before_optimizer_step``) and the start labels, which come from the local batch and differ
    between ranks. So the labels are all-gathered: every rank draws the same walk from the same
    global batch, which is also the batch the averaged gradient belongs to. Gathering the labels
    (``batch_size`` integers per rank) costs far less than broadcasting the masks from rank 0 (one
    value per weight), and keeps the walk's RNG stream the same as on one device.
    """

    def __init__(self, sampler: RandomWalkMask, seed: int = 0, backward: str = "dense", method: str = "rw") -> None:
        one_of("rw_backward", backward, BACKWARDS)
        if backward != "dense" and sampler.bias == "gradient":
            raise ConfigError(f"rw_backward={backward} draws the walk before backward, so it cannot use bias=gradient")
        self.sampler = sampler
        self.seed = seed
        self.backward = backward
        self.method = method
        self.generator: torch.Generator | None = None
        self._generator_state: Tensor | None = None
        self._labels: Tensor | None = None
        self._edges: tuple[Tensor, Tensor] | None = None
        self._masks: list[tuple[Tensor, Tensor]] | None = None
        self.cumulative_rows_x_fan_in = 0.0
        self._restored_counts: dict[str, Any] | None = None  # the epoch so far, from a checkpoint written within it

    def check_model(self, model: torch.nn.Module) -> None:
        """Raise ConfigError now if ``model`` is not a chain of Linear layers (called before training)."""
        linear_chain(model, self.method)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not in setup: the generator must live on the module's device, which Lightning moves it to
        # between setup and on_fit_start.
        model = inner_model(pl_module)
        if self.backward != "dense":
            use_row_sparse_backward(model)
        self.linears = linear_chain(model, self.method)
        self.sampler.prepare(self.linears)
        self.params = [p for lin in self.linears for p in (lin.weight, lin.bias) if p is not None]
        self.generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        if self._generator_state is not None:
            self.generator.set_state(self._generator_state)
        device = self.params[0].device
        widths = [lin.weight.shape[0] for lin in self.linears]
        self._row_offsets = torch.tensor([0, *widths[:-1]], device=device).cumsum(0).view(-1, 1)
        self._row_fan_in = torch.cat([torch.full((lin.weight.shape[0],), float(lin.weight.shape[1]), dtype=torch.float64)
                                      for lin in self.linears]).to(device)
        self._row_visited = torch.zeros(sum(widths), dtype=torch.float64, device=device)
        self._start_counts(self._restored_counts)  # Lightning resuming within an epoch starts no epoch
        self._restored_counts = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_counts()

    def _start_counts(self, so_far: dict[str, Any] | None = None) -> None:
        """Zero the epoch's row counts, or set them to ``so_far`` (a checkpoint's)."""
        so_far = so_far or {}
        self._rows_x_fan_in = so_far.get("rows_x_fan_in", torch.zeros((), dtype=torch.float64)).to(self._row_fan_in.device)
        self._steps = so_far.get("steps", 0)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        labels = batch[1]
        if trainer.world_size > 1:  # the global batch's labels, in rank order, on every rank
            labels = trainer.strategy.all_gather(labels).reshape(-1)
        self._labels = labels

    @property
    def masks(self) -> list[tuple[Tensor, Tensor]]:
        """This step's ``(weight_mask, bias_mask)`` per layer, in the gradients' dtype (built on first use)."""
        if self._masks is None and self.edges is not None:
            self._masks = edge_masks(
                [lin.weight for lin in self.linears], *self.edges, whole_rows=self.backward == "rows", dtype=self.params[0].dtype,
                backend=self.sampler.backend,
            )
        return self._masks or []

    @property
    def edges(self) -> tuple[Tensor, Tensor] | None:
        """This step's walked edges ``(rows, cols)``, each ``(layers, paths)``; setting them also marks
        the units they visit in every layer (the rows counted at the batch's end; the first layer's
        are the second layer's input rows)."""
        return self._edges

    @edges.setter
    def edges(self, edges: tuple[Tensor, Tensor] | None) -> None:
        self._edges = edges
        if edges is not None:
            self._row_visited.zero_().index_fill_(0, (edges[0] + self._row_offsets).reshape(-1), 1.0)

    def _draw(self) -> None:
        self.edges = self.sampler.edges(self.linears, self._labels, self.generator)
        self._masks = None

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        if self.backward == "dense":
            return
        self._draw()
        for lin, rows, cols in zip(self.linears, *self.edges):
            if self.backward == "rows":
                lin.set_rows(rows)
            else:
                lin.active_edges = (rows, cols)
        if len(self.linears) > 1:  # the first layer uses its input gradient only in its visited rows
            # sorted and unique, as torch.unique(self.edges[0][0]) in a fifth of its time
            self.linears[1].input_rows = self._row_visited[: self.linears[0].weight.shape[0]].nonzero().squeeze(1)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        # rows and edges: backward already left every gradient outside the walk at zero
        if self.backward == "dense":
            self._draw()
            keep_edge_gradients(self.linears, *self.edges, backend=self.sampler.backend)  # = multiplying by self.masks

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.edges is None:
            return
        self._rows_x_fan_in += torch.dot(self._row_visited, self._row_fan_in)  # filled when the edges were set
        self._steps += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._steps:
            epoch = float(self._rows_x_fan_in)
            self.cumulative_rows_x_fan_in += epoch
            pl_module.log_dict({"updates/rows_x_fan_in": epoch / self._steps,
                                "updates/cumulative_rows_x_fan_in": self.cumulative_rows_x_fan_in})

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"generator": self.generator.get_state() if self.generator is not None else None,
                                 "cumulative_rows_x_fan_in": self.cumulative_rows_x_fan_in}
        if hasattr(self, "_steps"):
            state["epoch"] = {"rows_x_fan_in": self._rows_x_fan_in.cpu(), "steps": self._steps}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.cumulative_rows_x_fan_in = state_dict.get("cumulative_rows_x_fan_in", 0.0)
        self._restored_counts = state_dict.get("epoch")
        # Lightning restores callback state after setup(); keep it for a later setup() too.
        self._generator_state = state_dict.get("generator")
        if self.generator is not None and self._generator_state is not None:
            self.generator.set_state(self._generator_state)
