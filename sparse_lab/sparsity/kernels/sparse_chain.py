"""Inference through a chain of sparse Linear layers with ReLU between them, all layers in one
compiled call (at batch 1 the per-layer Python and dispatch overhead would cost more than the
arithmetic)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from sparse_lab.sparsity.kernels._load import compiled
from sparse_lab.sparsity.kernels.sparse_linear import DENSE_ABOVE, SMALL_BATCH, SparseLinear

# Batches below SMALL_BATCH run fused up to this overall density, where the per-sample scatter
# kernel (one weight column per nonzero input) still beat torch's dense module at batch 1 on inputs
# without zeros (benchmarks/sparse_speed.py, "crossover", chain_b1; figures in docs/speed.md);
# larger batches up to DENSE_ABOVE.
SCATTER_DENSE_ABOVE = 0.2
# A single sample takes the scatter kernel (it skips background inputs, about 80% of an MNIST
# image); from two samples on the tiled kernel is faster (a pruned MNIST LeNet-300-100 at 95%:
# 14.7 against 17.9 us at batch 2, 11.7 against 14.8 us at batch 1; docs/speed.md).
TILED_FROM = 2


class SparseChain(nn.Module):
    """``Flatten -> [SparseLinear -> ReLU] * (n - 1) -> SparseLinear``, for inference.

    Where no gradient is wanted and the chain's overall density is below the crossover for the
    batch's size, the whole chain runs in one compiled call over copies of the weights taken at
    construction (call :meth:`refresh` after changing the weights): one sample as a scatter, each
    nonzero input adding its weight column (so zero inputs cost nothing), larger batches in tiles
    of 16 samples, transposed in registers, each output row a sum of weighted input rows held in
    vector registers; otherwise layer by layer, each layer choosing sparse or dense kernels itself.

    ``input_background``: per input feature (flattened), the value most inputs take, e.g. the
    normalized value of a black pixel; the scatter kernel skips inputs equal to it (the first
    layer's bias absorbs ``W @ background``), which is where real images pay: MNIST is about 80%
    black. Zero by default.
    """

    def __init__(self, layers: Sequence[SparseLinear], input_background: Tensor | None = None) -> None:
        super().__init__()
        if any(a.out_features != b.in_features for a, b in zip(layers, layers[1:])):
            raise ValueError("the layers do not form a chain")
        self.layers = nn.ModuleList(layers)
        in_features = layers[0].in_features
        background = torch.zeros(in_features) if input_background is None else input_background.detach().flatten().cpu()
        if background.numel() != in_features:
            raise ValueError(f"input_background has {background.numel()} values for {in_features} input features")
        self.register_buffer("input_background", background.to(layers[0].weight.dtype))
        self.refresh()

    @classmethod
    def from_linears(cls, linears: Sequence[nn.Linear], input_background: Tensor | None = None) -> SparseChain:
        """The chain of ``linears`` (input to output), each masked where its weight is exactly zero."""
        layers = [SparseLinear(lin.weight.detach().clone(), lin.weight.detach() != 0, _bias_copy(lin)) for lin in linears]
        return cls(layers, input_background)

    @torch.no_grad()
    def refresh(self) -> None:
        """Copy the layers' current weights into the fused kernels' CSR and CSC arrays."""
        layers = self._layer_list = list(self.layers)  # a plain list: indexing a ModuleList costs a microsecond
        widths = [layers[0].in_features] + [lay.out_features for lay in layers]
        nnz_starts = torch.tensor([0, *torch.tensor([lay.nnz for lay in layers]).cumsum(0).tolist()], dtype=torch.int64)
        weights = [lay.weight.detach().cpu().reshape(-1) for lay in layers]
        biases = [lay.bias.detach().cpu() if lay.bias is not None else torch.zeros(lay.out_features) for lay in layers]
        dtype = weights[0].dtype
        widths_t = torch.tensor(widths, dtype=torch.int64)
        first = layers[0]
        folded = biases[0].to(dtype) + (first.weight.detach().cpu() * first.mask.cpu()) @ self.input_background.cpu()
        csc = (
            torch.cat([lay.csc_indptr + start for lay, start in zip(layers, nnz_starts.tolist())]),
            torch.cat([lay.csc_indices for lay in layers]),
            torch.cat([w[lay.csc_positions] for w, lay in zip(weights, layers)]),
            torch.cat([folded, *biases[1:]]).to(dtype),
            widths_t,
        )
        self._background = self.input_background.cpu().numpy()
        self._csc = tuple(t.numpy() for t in csc)
        self._dtype = dtype
        self._density = float(nnz_starts[-1]) / sum(lay.weight.numel() for lay in layers)
        self._widths = widths
        self._compiled_ok = all(lay.uses_sparse_kernels(1, limit=1.0) and lay.weight.dtype == dtype for lay in layers)
        self._kernels = compiled() if self._compiled_ok else None
        if self._kernels is not None:
            self._tiled = _tiled_arrays(layers, weights, biases, nnz_starts, widths, self._kernels.LANES)

    def _fused_pays(self, batch: int) -> bool:
        """Whether the chain as a whole is sparse enough for ``batch``: the crossover applies to its
        overall density, since a small dense layer (the output layer of a globally pruned net) costs
        less in the fused call than a separate dense call costs in dispatch."""
        if not self._compiled_ok:
            return False
        chosen = [lay.dense_above for lay in self._layer_list if lay.dense_above is not None]
        default = SCATTER_DENSE_ABOVE if batch < SMALL_BATCH else DENSE_ABOVE
        return self._density <= (min(chosen) if chosen else default)

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[0]
        wants_grad = torch.is_grad_enabled() and (x.requires_grad or self._layer_list[0].weight.requires_grad)
        if wants_grad or x.dtype != self._dtype or not x.is_cpu or not self._fused_pays(batch):
            x = x.flatten(1)
            for i, layer in enumerate(self.layers):
                x = layer(x)
                if i < len(self.layers) - 1:
                    x = torch.relu(x)
            return x
        # numpy from here: each torch call costs microseconds, a batch of one takes about ten
        inputs = (x.detach() if x.requires_grad else x).numpy().reshape(batch, -1)
        out = np.empty((batch, self._widths[-1]), inputs.dtype)
        if batch < TILED_FROM:
            self._kernels._chain_forward_scatter(np.ascontiguousarray(inputs), self._background, *self._csc, out)
        else:
            self._kernels._chain_forward_tiled(np.ascontiguousarray(inputs), *self._tiled, out)
        return torch.from_numpy(out)


def _tiled_arrays(layers: Sequence[SparseLinear], weights: Sequence[Tensor], biases: Sequence[Tensor], nnz_starts: Tensor,
                  widths: Sequence[int], lanes: int) -> tuple:
    """The arguments of ``_chain_forward_tiled`` after ``x``: the first layer's input features that
    some weight reads numbered in order (the others to one spare row; ``lanes``: the kernel's tile
    width, which the numbering's length is rounded up to), every layer's CSR rows with absolute
    offsets, the first layer's column indices renumbered."""
    first = layers[0]
    read = torch.zeros(widths[0], dtype=torch.bool)
    read[first.csr_indices.cpu()] = True
    used = int(read.sum())
    input_rows = torch.full(((widths[0] + lanes - 1) // lanes * lanes,), used, dtype=torch.int64)
    input_rows[: widths[0]][read] = torch.arange(used)
    indices = [input_rows[first.csr_indices.cpu()], *(lay.csr_indices.cpu() for lay in layers[1:])]
    arrays = (
        input_rows,
        used,
        torch.cat([lay.csr_indptr.cpu() + start for lay, start in zip(layers, nnz_starts.tolist())]),
        torch.cat(indices).to(torch.int32),
        torch.cat([w[lay.csr_positions.cpu()] for w, lay in zip(weights, layers)]),
        torch.cat(biases).to(weights[0].dtype),
        torch.tensor(widths, dtype=torch.int64),
    )
    return tuple(a.numpy() if isinstance(a, Tensor) else a for a in arrays)


def _bias_copy(linear: nn.Linear) -> Tensor | None:
    return linear.bias.detach().clone() if linear.bias is not None else None
