"""Linear layers whose backward pass computes only what a random walk visited: its rows (output
units) or its edges."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparse_lab.sparsity.kernels import edge_gradients

# Above this share of visited rows, the row-sparse backward masks the output gradient and runs the
# dense products (zero rows stay zero) instead of gathering and scattering rows.
GATHER_BELOW = 0.5


def _input_grad(go: Tensor, weight: Tensor, cols: Tensor | None) -> Tensor:
    """``go @ weight``, computed only in the columns ``cols`` (the rest zero) when they are few."""
    if cols is None or cols.numel() >= GATHER_BELOW * weight.shape[1]:
        return go @ weight
    # index_select / index_copy_: advanced indexing of a 2048 x 2048 weight's columns took 7.1 ms
    # here, index_select 1.2 ms
    return go.new_zeros(go.shape[0], weight.shape[1]).index_copy_(1, cols, go @ weight.index_select(1, cols))


class _WalkSparseLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, layer: RowSparseLinear) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.layer = layer
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        layer = ctx.layer
        need_x = ctx.needs_input_grad[0]
        if layer.active_edges is not None:  # dense signal down, weight gradients on the edges only
            grad_w, grad_b = edge_gradients(grad_out, x, *layer.active_edges, with_bias=ctx.has_bias)
            return _input_grad(grad_out, weight, layer.input_rows) if need_x else None, grad_w, grad_b, None
        rows = layer.active_rows
        if rows is None:  # no walk set: dense backward
            grad_x = grad_out @ weight if need_x else None
            return grad_x, grad_out.t() @ x, grad_out.sum(0) if ctx.has_bias else None, None
        if layer.row_mask is not None and rows.numel() >= GATHER_BELOW * weight.shape[0]:
            go = grad_out * layer.row_mask
            grad_x = _input_grad(go, weight, layer.input_rows) if need_x else None
            return grad_x, go.t() @ x, go.sum(0) if ctx.has_bias else None, None
        go = grad_out.index_select(1, rows)  # (B, r): only visited output units send a signal back
        grad_x = _input_grad(go, weight.index_select(0, rows), layer.input_rows) if need_x else None
        grad_w = torch.zeros_like(weight).index_copy_(0, rows, go.t() @ x)
        grad_b = None
        if ctx.has_bias:
            grad_b = torch.zeros(weight.shape[0], dtype=grad_out.dtype, device=grad_out.device).index_copy_(0, rows, go.sum(0))
        return grad_x, grad_w, grad_b, None


class RowSparseLinear(nn.Linear):
    """``nn.Linear`` with the same parameters; its backward touches only what the walk set:

    - ``active_rows`` (sorted unique rows) and ``row_mask`` (1 at them, 0 elsewhere, the output's
      dtype): the gradients of those rows only, and the signal to the layer below flows only
      through them;
    - ``active_edges`` (``(rows, cols)``, int64, duplicates allowed): the full signal flows down,
      and the weight gradient is computed on those edges only (the bias's on their rows), the
      same values as the dense gradient masked to them;
    - ``input_rows`` (sorted unique input units, or None): the only units of the layer below whose
      gradient is used (the walk's rows of a first layer, which sends no gradient further down);
      the input gradient is computed in those columns only, zero elsewhere.

    Neither rows nor edges set: dense backward. Inputs must be 2-D ``(batch, in_features)``, as in an MLP.
    """

    active_rows: Tensor | None = None
    row_mask: Tensor | None = None
    active_edges: tuple[Tensor, Tensor] | None = None
    input_rows: Tensor | None = None

    @classmethod
    def wrap(cls, linear: nn.Linear) -> RowSparseLinear:
        """A RowSparseLinear sharing ``linear``'s Parameter objects."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        new.weight = linear.weight
        new.bias = linear.bias
        return new

    def set_rows(self, rows: Tensor | None) -> None:
        """Restrict the next backward passes to the output units ``rows`` (any order, repeats
        allowed); None: dense backward."""
        self.active_edges = None
        if rows is None:
            self.active_rows = self.row_mask = None
            return
        mask = torch.zeros(self.out_features, dtype=self.weight.dtype, device=self.weight.device)
        mask[rows] = 1
        self.row_mask = mask
        self.active_rows = mask.nonzero().squeeze(1)

    def forward(self, x: Tensor) -> Tensor:
        return _WalkSparseLinearFn.apply(x, self.weight, self.bias, self)


def use_row_sparse_backward(model: nn.Module) -> list[RowSparseLinear]:
    """Replace every ``nn.Linear`` in ``model`` by a RowSparseLinear (same parameters, same state-dict keys)."""
    replaced = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                new = RowSparseLinear.wrap(child)
                setattr(parent, name, new)
                replaced.append(new)
    return replaced
