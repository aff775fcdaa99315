"""Keep a model's masked Linear layers on the sparse kernels while its masks change."""

from __future__ import annotations

from torch import nn

from sparse_lab.sparsity.kernels.sparse_linear import SparseLinear, sparsify_linears
from sparse_lab.sparsity.masks import MaskSet


class MaskedLinearKernels:
    """Runs every masked ``nn.Linear`` of a :class:`MaskSet`'s model as a :class:`SparseLinear` over
    its current mask (sharing the Linear's Parameters, so optimizers, checkpoints and the MaskSet
    see the same tensors); :meth:`sync` follows mask changes. Masked convolutions and other
    parameters stay as they are (no sparse convolution kernels). ``dense_above``: as
    :class:`SparseLinear`'s (None: the measured crossovers).

    Between a change of the masks and the next :meth:`sync`, a layer's mask may hold entries the
    MaskSet has pruned: harmless, as those weights are zero and the MaskSet masks their gradients.
    Growing masks need the sync before the next forward (a grown weight off the layer's mask would
    get no gradient); call it there, e.g. from a forward pre-hook. The sync also passes on the
    MaskSet's ``keep_dense_grads``: while it is set, the layers compute dense weight gradients
    (:attr:`SparseLinear.dense_weight_grad`), which the MaskSet keeps before masking them; while it
    is not, the MaskSet is told that the layers' weight gradients arrive masked
    (:meth:`MaskSet.gradients_arrive_masked`) and does not multiply them by the masks again.
    """

    def __init__(self, masks: MaskSet, dense_above: float | None = None) -> None:
        self.masks = masks
        self.dense_above = dense_above
        self.names = [n for n in masks.names if _linear_of(masks.model, n) is not None]
        if not self.names:
            raise ValueError(f"no masked parameter of {type(masks.model).__name__} is the weight of an nn.Linear")
        self.synced_version = -1
        self.layers: list[SparseLinear] = []

    def sync(self) -> bool:
        """Bring the layers to the MaskSet's current masks (swapping ``nn.Linear`` layers for
        :class:`SparseLinear` the first time) and to its ``keep_dense_grads``; whether the masks changed."""
        changed = self.masks.version != self.synced_version
        if changed:
            replaced = sparsify_linears(self.masks.model, {n: self.masks.masks[n] for n in self.names}, self.dense_above)
            self.layers = list(replaced.values())
            self.synced_version = self.masks.version
        for layer in self.layers:
            layer.dense_weight_grad = self.masks.keep_dense_grads
        # the layers' weight gradients are zero outside their masks, which are the MaskSet's now
        self.masks.gradients_arrive_masked(() if self.masks.keep_dense_grads else self.names)
        return changed


def _linear_of(model: nn.Module, param_name: str) -> nn.Linear | None:
    """The ``nn.Linear`` (a SparseLinear included) whose ``weight`` is ``param_name``, else None."""
    module_name, _, leaf = param_name.rpartition(".")
    module = model.get_submodule(module_name)
    return module if leaf == "weight" and isinstance(module, nn.Linear) else None
