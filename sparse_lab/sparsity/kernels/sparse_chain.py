"""Inference through a chain of sparse Linear layers with ReLU between them, all layers in one
compiled call (at batch 1 the per-layer Python and dispatch overhead would cost more than the
arithmetic)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sparse_lab.sparsity.kernels._load import compiled
from sparse_lab.sparsity.kernels.sparse_linear import DENSE_ABOVE, SMALL_BATCH, SparseLinear

# The fused call at batch 1 beat torch's dense module at 5% density (1.1-1.2x, benchmarks/sparse_speed.py),
# where a single SparseLinear did not: one compiled call instead of one per layer.
FUSED_DENSE_ABOVE_SMALL_BATCH = 0.06


class SparseChain(nn.Module):
    """``Flatten -> [SparseLinear -> ReLU] * (n - 1) -> SparseLinear``, for inference.

    Where the chain's overall density is below the crossover for the batch's size (see
    :meth:`SparseLinear.uses_sparse_kernels`) and no gradient is wanted, the whole chain runs in one compiled call over CSR copies of the
    weights taken at construction (call :meth:`refresh` after changing the weights); otherwise
    layer by layer, each layer choosing sparse or dense kernels itself.
    """

    def __init__(self, layers: Sequence[SparseLinear]) -> None:
        super().__init__()
        if any(a.out_features != b.in_features for a, b in zip(layers, layers[1:])):
            raise ValueError("the layers do not form a chain")
        self.layers = nn.ModuleList(layers)
        self.refresh()

    @classmethod
    def from_linears(cls, linears: Sequence[nn.Linear]) -> SparseChain:
        """The chain of ``linears`` (input to output), each masked where its weight is exactly zero."""
        return cls([SparseLinear(lin.weight.detach().clone(), lin.weight.detach() != 0, _bias_copy(lin)) for lin in linears])

    @torch.no_grad()
    def refresh(self) -> None:
        """Copy the layers' current weights into the fused kernel's CSR arrays."""
        layers = list(self.layers)
        widths = [layers[0].in_features] + [lay.out_features for lay in layers]
        self._widths = torch.tensor(widths, dtype=torch.int64)
        self._indptr = torch.cat([lay.csr_indptr for lay in layers])
        self._indices = torch.cat([lay.csr_indices for lay in layers])
        self._values = torch.cat([lay.weight.detach().cpu().reshape(-1)[lay.csr_positions] for lay in layers])
        self._biases = torch.cat(
            [lay.bias.detach().cpu() if lay.bias is not None else torch.zeros(lay.out_features) for lay in layers]
        ).to(self._values.dtype)
        self._row_starts = torch.tensor([0, *torch.tensor(widths[1:]).cumsum(0).tolist()], dtype=torch.int64)
        self._nnz_starts = torch.tensor([0, *torch.tensor([lay.nnz for lay in layers]).cumsum(0).tolist()], dtype=torch.int64)
        self._density = sum(lay.nnz for lay in layers) / sum(lay.weight.numel() for lay in layers)
        positions = torch.arange(self._values.numel())
        self._arrays = tuple(
            t.numpy()
            for t in (self._indptr, self._indices, self._values, positions, self._biases, self._row_starts, self._nnz_starts, self._widths)
        )

    def _fused_pays(self, batch: int) -> bool:
        """Whether the chain as a whole is sparse enough for ``batch``: the crossover applies to its
        overall density, since a small dense layer (the output layer of a globally pruned net) costs
        less in the fused call than a separate dense call costs in dispatch."""
        chosen = [lay.dense_above for lay in self.layers if lay.dense_above is not None]
        limit = min(chosen) if chosen else DENSE_ABOVE if batch >= SMALL_BATCH else FUSED_DENSE_ABOVE_SMALL_BATCH
        return self._density <= limit and all(lay.uses_sparse_kernels(batch, limit=1.0) for lay in self.layers)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        batch = x.shape[0]
        fused = (
            not (torch.is_grad_enabled() and (x.requires_grad or self.layers[0].weight.requires_grad))
            and x.dtype == self._values.dtype
            and self._fused_pays(batch)
        )
        if not fused:
            for i, layer in enumerate(self.layers):
                x = layer(x)
                if i < len(self.layers) - 1:
                    x = torch.relu(x)
            return x
        x_t = x.t().contiguous().numpy()
        out = torch.empty(batch, self.layers[-1].out_features, dtype=x.dtype)
        compiled()._chain_forward(x_t, self._arrays, out.numpy())
        return out


def _bias_copy(linear: nn.Linear) -> Tensor | None:
    return linear.bias.detach().clone() if linear.bias is not None else None
