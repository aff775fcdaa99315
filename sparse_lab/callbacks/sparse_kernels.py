"""Training on the sparse kernels: a thin Lightning adapter over :class:`MaskedLinearKernels`."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch.utils.hooks import RemovableHandle

from sparse_lab.callbacks.masking import MaskEnforcer, inner_model
from sparse_lab.checks import is_number, require
from sparse_lab.sparsity.kernels import MaskedLinearKernels
from sparse_lab.sparsity.kernels.sparse_linear import prepare


class SparseKernels(Callback):
    """With ``enabled`` (the ``sparse_kernels=true`` knob), the method's masked Linear layers run
    forward, input gradient and weight gradient on compiled sparse kernels over the masks (dense
    kernels above the measured crossover density; see :class:`~sparse_lab.sparsity.kernels.SparseLinear`),
    following every change of the masks before the next forward. Serves the masks of the Trainer's
    :class:`MaskEnforcer` (pruning at initialization, progressive and gmp, SET, RigL, lottery rounds); a
    Trainer without one (a lottery's dense round) trains as it would without this. Convolutions stay
    dense. On the steps whose dense gradient the MaskSet keeps (RigL's growth steps, one in
    ``update_every``), the layers run on the dense kernels. Which methods may ask for it is checked
    by :mod:`sparse_lab.validation`. ``dense_above``: see :class:`~sparse_lab.sparsity.kernels.SparseLinear`."""

    def __init__(self, enabled: bool = False, dense_above: float | None = None) -> None:
        require(isinstance(enabled, bool), "sparse_kernels", enabled, "true or false")
        require(dense_above is None or is_number(dense_above, -1, 1), "callbacks.sparse_kernels.dense_above", dense_above,
                "null (the measured crossovers) or a density in [-1, 1]")
        self.enabled = enabled
        self.dense_above = dense_above
        self.kernels: MaskedLinearKernels | None = None
        self._enforcer: MaskEnforcer | None = None
        self._hook: RemovableHandle | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        enforcers = [c for c in trainer.callbacks if isinstance(c, MaskEnforcer)]
        if self.enabled and enforcers and self._hook is None:
            self._enforcer = enforcers[0]
            self._hook = inner_model(pl_module).register_forward_pre_hook(self._sync)
            if stage == "fit" and trainer.strategy.root_device.type == "cpu":  # the kernels' first load, not in the first step
                prepare(next(inner_model(pl_module).parameters()).dtype)

    def _sync(self, *_: object) -> None:
        if self.kernels is None:  # the enforcer makes its MaskSet in its own setup
            self.kernels = MaskedLinearKernels(self._enforcer.masks, self.dense_above)
        self.kernels.sync()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
